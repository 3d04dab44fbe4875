'use strict';
'require view';
'require rpc';
'require poll';

var callStatus = rpc.declare({
	object: 'luci.loxgw',
	method: 'status',
	expect: { }
});

function age(seconds) {
	if (seconds == null)
		return '-';
	seconds = Math.round(seconds);
	if (seconds < 120)
		return seconds + 's';
	if (seconds < 7200)
		return Math.floor(seconds / 60) + 'm';
	return Math.floor(seconds / 3600) + 'h';
}

function table(headers, rows) {
	return E('table', { 'class': 'table' }, [
		E('tr', { 'class': 'tr table-titles' }, headers.map(function(h) {
			return E('th', { 'class': 'th' }, h);
		}))
	].concat(rows.length ? rows.map(function(row) {
		return E('tr', { 'class': 'tr' }, row.map(function(cell) {
			return E('td', { 'class': 'td' }, cell);
		}));
	}) : [ E('tr', { 'class': 'tr placeholder' }, E('td', { 'class': 'td' }, _('None'))) ]));
}

function render(status) {
	if (!status || status.error)
		return E('p', { 'class': 'alert-message warning' }, _('loxgw is not running.'));

	var devices = (status.devices || []).map(function(d) {
		return [ d.name || '-', d.product + (d.product_known ? '' : ' (?)'), d.mac || '-', d.ip || '-',
			d.source, age(d.last_seen), (d.pinholes || []).length ];
	});
	var entries = (status.dns_entries || []).map(function(e) {
		return [ e.device, e.name, e.address, e.proto + '/' + e.ports, age(e.expires_in) ];
	});
	var relay = status.relay || {};
	var counters = Object.keys(relay.counters || {}).sort().map(function(k) {
		return [ k, relay.counters[k] ];
	});
	var upnp = (status.upnp || []).map(function(u) {
		return [ u.name, u.state || (u.enabled ? _('enabled') : _('disabled')), u.external_ip || '-',
			u.external_port || '-', u.internal_port ];
	});

	return E('div', {}, [
		E('p', {}, _('Firewall: %s, DNS: %s (queue %s, %s), up %s').format(
			status.firewall, status.dns_mode, status.queue_mode, status.dns_path || '-', age(status.uptime))),
		E('h3', {}, _('Loxone devices')),
		table([ _('Name'), _('Product'), _('MAC'), _('IP'), _('Detected by'), _('Last seen'), _('Pinholes') ], devices),
		E('h3', {}, _('DNS allowances')),
		table([ _('Device'), _('Name'), _('Address'), _('Ports'), _('Expires in') ], entries),
		E('h3', {}, _('Discovery relay')),
		table([ _('Interface:port:counter'), _('Value') ], counters),
		E('h3', {}, _('UPnP mappings')),
		table([ _('Section'), _('State'), _('External IP'), _('External port'), _('Internal port') ], upnp)
	]);
}

return view.extend({
	load: function() {
		return callStatus();
	},

	render: function(status) {
		var container = E('div', { 'id': 'loxgw-status' }, render(status));
		poll.add(function() {
			return callStatus().then(function(next) {
				container.replaceChildren(render(next));
			});
		}, 5);
		return E('div', {}, [ E('h2', {}, _('Loxone gateway')), container ]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
