// The ubus objects of an OpenWrt router that this local LuCI stack does not build:
// procd's `service`, netifd's `network` and `network.interface`, and rpcd-mod-luci's
// `luci-rpc` (a C plugin needing libnl and iwinfo). Answers are fixed and small, shaped
// as those daemons answer; the loxgw pid comes from the status file the daemon writes.
//
//   ucode /etc/realluci/standin.uc STATUS_FILE
'use strict';

import { connect } from 'ubus';
import * as uloop from 'uloop';
import { readfile, open } from 'fs';

const status_file = ARGV[0];

const INTERFACES = [
	{ interface: 'lan', up: true, proto: 'static', device: 'br-lan', l3_device: 'br-lan',
	  'ipv4-address': [ { address: '192.168.10.1', mask: 24 } ] },
	{ interface: 'iot', up: true, proto: 'static', device: 'br-iot', l3_device: 'br-iot',
	  'ipv4-address': [ { address: '192.168.20.1', mask: 24 } ] },
	{ interface: 'guest', up: true, proto: 'static', device: 'br-guest', l3_device: 'br-guest',
	  'ipv4-address': [ { address: '192.168.30.1', mask: 24 } ] },
	{ interface: 'wan', up: true, proto: 'dhcp', device: 'eth1', l3_device: 'eth1',
	  'ipv4-address': [ { address: '203.0.113.2', mask: 24 } ] },
];

function device(name, up) {
	return { name: name, up: up, type: (substr(name, 0, 3) == 'br-') ? 1 : 1, devtype: 'ethernet',
		mac: '02:00:00:00:00:01', mtu: 1500, flags: { up: up, multicast: true, broadcast: true },
		stats: {}, ipaddrs: [], ip6addrs: [] };
}

function loxgwPid() {
	const text = readfile(status_file);
	if (text == null)
		return null;
	try {
		return json(text).pid;
	}
	catch (e) {
		return null;
	}
}

// ucode registers a method only with at least one argument hint, and refuses arguments it
// was not told of: uhttpd adds the caller's session to every call.
const NO_ARGS = { ubus_rpc_session: '' };

uloop.init();
const conn = connect();

// rpcd's uci commit and apply tell procd which config changed; procd would then run the
// reload triggers of the services that watch it (loxgw's init script watches 'loxgw').
function logEvent(type, data) {
	const log = open('/tmp/service-events.log', 'a');
	log.write(sprintf('%s %J\n', type, data));
	log.close();
}

conn.publish('service', {
	list: {
		args: { name: '', verbose: false, ubus_rpc_session: '' },
		call: function(req) {
			const pid = loxgwPid();
			if (pid == null)
				return {};
			return { loxgw: { instances: { loxgw: { running: true, pid: pid } } } };
		}
	},
	event: {
		args: { type: '', data: {}, ubus_rpc_session: '' },
		call: function(req) {
			logEvent(req.args.type, req.args.data);
			return 0;
		}
	}
});

conn.publish('network.interface', {
	dump: { args: NO_ARGS, call: function(req) { return { interface: INTERFACES }; } }
});

conn.publish('network', {
	get_proto_handlers: {
		args: NO_ARGS,
		call: function(req) {
			return { static: { no_device: false }, dhcp: { no_device: false } };
		}
	}
});

conn.publish('luci-rpc', {
	getBoardJSON: {
		args: NO_ARGS,
		call: function(req) {
			return { model: { id: 'realluci', name: 'Local LuCI check' },
				network: { lan: { device: 'br-lan', protocol: 'static' } } };
		}
	},
	getNetworkDevices: {
		args: NO_ARGS,
		call: function(req) {
			const devices = {};
			for (let name in [ 'lo', 'br-lan', 'br-iot', 'br-guest', 'eth1' ])
				devices[name] = device(name, true);
			return devices;
		}
	},
	getWirelessDevices: { args: NO_ARGS, call: function(req) { return {}; } },
	getHostHints: { args: NO_ARGS, call: function(req) { return {}; } },
});

uloop.run();
