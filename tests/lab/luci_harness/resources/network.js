'use strict';
'require baseclass';
'require uci';

/*
 * LuCI.network, as far as widgets.NetworkSelect uses it: getNetworks() resolves to the
 * router's logical networks (UCI network 'interface' sections, loopback included) as
 * objects with getName(), getDevices(), isVirtual(), isUp() and getI18n().
 */

const Network = baseclass.extend({
	__init__(section) {
		this.sid = section['.name'];
		this.section = section;
	},
	getName() { return this.sid; },
	getProtocol() { return this.section.proto || 'none'; },
	getI18n() { return this.sid; },
	getDevices() { return []; },
	getDevice() { return null; },
	isBridge() { return false; },
	isVirtual() { return false; },
	isUp() { return true; }
});

return baseclass.extend({
	getNetworks() {
		return uci.load('network').then(function() {
			return uci.sections('network', 'interface').map(function(s) { return new Network(s); })
				.sort(function(a, b) { return L.naturalCompare(a.getName(), b.getName()); });
		});
	},

	getDevices() {
		return Promise.resolve([]);
	}
});
