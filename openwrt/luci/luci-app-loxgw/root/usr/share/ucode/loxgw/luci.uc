// What the LuCI app's rpcd plugin answers, as pure functions of plain data.
//
// The plugin (/usr/share/rpcd/ucode/luci.loxgw) does the I/O: it reads the status file
// the daemon rewrites every 5 s, asks procd and netifd, runs `loxgw check` on demand,
// and hands what it got to these functions. Nothing here touches a file or a socket,
// so the tests run this very file under node with the ucode builtins it uses
// (tests/lab/luci_harness/ucode.mjs).
//
// Written in the subset of ucode that is also JavaScript: builtins are functions
// (length, push, keys, sort, substr, index, ...), never methods; no division (ucode
// divides integers as integers); no for-in over arrays (ucode yields values, JS
// indices); absent values are tested with `== null` (ucode has no undefined).
//
// Every string that reaches the browser is bounded here; escaping is the view's job
// (it renders them as text nodes, never as markup).

'use strict';

export const DEFAULT_SOCKET = '/var/run/loxgw/status.sock';

// The daemon rewrites its status file every 5 s: three missed writes mean it hangs.
export const STALE_AFTER = 15;

// A status file, or a `loxgw status --full` answer, larger than this is not read.
export const MAX_STATUS_BYTES = 4194304;

// Bounds of what one answer carries, so the overview stays small at any scale.
export const LIMITS = {
	devices: 250,
	zones: 32,
	upnp: 32,
	relay_interfaces: 32,
	relay_counter_keys: 2000,
	counters: 200,
	failures: 20,
	list: 16,
	text: 160,
	error: 400,
	dns_devices: 64,
	dns_names: 100,
	dns_rules: 16,
	dns_addresses: 8,
	check_messages: 50
};

// Devices travel as rows of these fields (the names once, not per device): with 250
// devices the overview answer is 29 KB, where objects made it 75 KB.
export const DEVICE_FIELDS = [
	'name', 'product', 'product_known', 'mac', 'ip', 'last_seen', 'present', 'firmware',
	'pinhole_count', 'dns_entry_count', 'network', 'zone'
];

const DISABLED_WORDS = { '0': true, 'no': true, 'off': true, 'false': true, 'disabled': true };

function isnum(value) {
	const t = type(value);
	return t == 'int' || t == 'double';
}

function num(value) {
	return isnum(value) ? value : null;
}

// A string for the browser: bounded, or null.
function text(value, max) {
	if (value == null)
		return null;
	const t = type(value);
	if (t != 'string' && t != 'int' && t != 'double' && t != 'bool')
		return null;
	value = '' + value;
	return (length(value) > max) ? substr(value, 0, max - 3) + '...' : value;
}

function texts(values, max_items, max_len) {
	const out = [];
	if (type(values) != 'array')
		return out;
	for (let i = 0; i < length(values) && length(out) < max_items; i++) {
		const value = text(values[i], max_len);
		if (value != null)
			push(out, value);
	}
	return out;
}

function bool(value) {
	return value === true;
}

// Python's os.path.splitext(path)[0] + '.json': the daemon's status file beside its socket.
export function statusFile(socket_path) {
	let path = (type(socket_path) == 'string' && length(socket_path) > 0) ? socket_path : DEFAULT_SOCKET;
	const slash = rindex(path, '/');
	const base = substr(path, slash + 1);
	const dot = rindex(base, '.');
	let lead = 0;
	while (lead < length(base) && substr(base, lead, 1) == '.')
		lead++;
	if (dot >= lead)
		path = substr(path, 0, slash + 1 + dot);
	return path + '.json';
}

export function isDisabled(enabled_option) {
	return type(enabled_option) == 'string' && DISABLED_WORDS[lc(enabled_option)] == true;
}

// procd's `service list {"name": "loxgw"}` answer, reduced to what the page needs.
export function serviceState(list) {
	const service = (type(list) == 'object') ? list.loxgw : null;
	const out = { registered: type(service) == 'object', instances: 0, running: false, pid: null, exit_code: null };
	const instances = out.registered ? service.instances : null;
	if (type(instances) != 'object')
		return out;
	for (let name in instances) {
		const instance = instances[name];
		if (type(instance) != 'object')
			continue;
		out.instances++;
		if (instance.running === true) {
			out.running = true;
			out.pid = num(instance.pid);
		}
		else if (out.exit_code == null) {
			out.exit_code = num(instance.exit_code);
		}
	}
	return out;
}

function ip4(text_value) {
	if (type(text_value) != 'string')
		return null;
	const parts = split(text_value, '.');
	if (length(parts) != 4)
		return null;
	let value = 0;
	for (let i = 0; i < 4; i++) {
		if (!match(parts[i], /^[0-9]{1,3}$/))
			return null;
		const octet = int(parts[i]);
		if (octet > 255)
			return null;
		value = value * 256 + octet;
	}
	return value;
}

function block(bits) {
	let size = 1;
	for (let i = 0; i < 32 - bits; i++)
		size = size * 2;
	return size;
}

// netifd's `network.interface dump`: which OpenWrt network holds an IPv4 address.
function networkOf(address, interfaces) {
	const value = ip4(address);
	if (value == null || type(interfaces) != 'array')
		return null;
	for (let i = 0; i < length(interfaces); i++) {
		const iface = interfaces[i];
		const addresses = (type(iface) == 'object') ? iface['ipv4-address'] : null;
		if (type(addresses) != 'array')
			continue;
		for (let j = 0; j < length(addresses); j++) {
			const net = ip4(addresses[j]?.address);
			const mask = num(addresses[j]?.mask);
			if (net == null || mask == null || mask < 8 || mask > 32)
				continue;
			const size = block(mask);
			if (value - (value % size) == net - (net % size))
				return { network: iface.interface, device: iface.l3_device ?? iface.device };
		}
	}
	return null;
}

function zoneOf(found, zones) {
	if (found == null)
		return null;
	for (let i = 0; i < length(zones); i++) {
		const zone = zones[i];
		if (index(zone.networks, found.network) >= 0 || index(zone.interfaces, found.device) >= 0)
			return zone.name;
	}
	return null;
}

function zonesOf(status) {
	const out = [];
	const zones = (type(status.zones) == 'array') ? status.zones : [];
	for (let i = 0; i < length(zones) && length(out) < LIMITS.zones; i++) {
		const zone = zones[i];
		if (type(zone) != 'object')
			continue;
		push(out, {
			name: text(zone.name, LIMITS.text),
			role: text(zone.role, 16),
			interfaces: texts(zone.interfaces, LIMITS.list, 32),
			networks: texts(zone.networks, LIMITS.list, 32),
			cloud: bool(zone.cloud)
		});
	}
	return out;
}

// Devices that need attention first: gone, then of unknown product; then by name and address.
function deviceRank(device) {
	if (!device.present)
		return 0;
	if (!device.product_known)
		return 1;
	return 2;
}

function compareDevices(a, b) {
	const ra = deviceRank(a), rb = deviceRank(b);
	if (ra != rb)
		return ra - rb;
	const na = lc(a.name ?? ''), nb = lc(b.name ?? '');
	if (na != nb)
		return (na < nb) ? -1 : 1;
	const ia = a.ip ?? '', ib = b.ip ?? '';
	if (ia != ib)
		return (ia < ib) ? -1 : 1;
	return 0;
}

function devicesOf(status, zones, interfaces) {
	const all = [];
	const devices = (type(status.devices) == 'array') ? status.devices : [];
	for (let i = 0; i < length(devices); i++) {
		const device = devices[i];
		if (type(device) != 'object')
			continue;
		const ip = text(device.ip, 64);
		const found = networkOf(ip, interfaces);
		push(all, {
			name: text(device.name, LIMITS.text),
			product: text(device.product, 32),
			product_known: device.product_known !== false,
			mac: text(device.mac, 17),
			ip: ip,
			last_seen: num(device.last_seen),
			present: device.present !== false,
			firmware: text(device.firmware, 32),
			pinhole_count: num(device.pinhole_count) ?? 0,
			dns_entry_count: num(device.dns_entry_count) ?? 0,
			network: (found != null) ? text(found.network, 32) : null,
			zone: zoneOf(found, zones)
		});
	}
	sort(all, compareDevices);
	const counts = { total: length(all), gone: 0, unknown: 0 };
	for (let i = 0; i < length(all); i++) {
		if (!all[i].present)
			counts.gone++;
		else if (!all[i].product_known)
			counts.unknown++;
	}
	const rows = [];
	for (let i = 0; i < length(all) && i < LIMITS.devices; i++) {
		const row = [];
		for (let j = 0; j < length(DEVICE_FIELDS); j++)
			push(row, all[i][DEVICE_FIELDS[j]]);
		push(rows, row);
	}
	return { devices: { fields: DEVICE_FIELDS, rows: rows }, counts: counts };
}

function upnpOf(status) {
	const out = [];
	const mappings = (type(status.upnp) == 'array') ? status.upnp : [];
	for (let i = 0; i < length(mappings) && length(out) < LIMITS.upnp; i++) {
		const m = mappings[i];
		if (type(m) != 'object')
			continue;
		push(out, {
			name: text(m.name, LIMITS.text),
			enabled: bool(m.enabled),
			device: text(m.device, LIMITS.text),
			internal_port: num(m.internal_port),
			external_port: num(m.external_port),
			proto: text(m.proto, 8),
			lease: num(m.lease),
			check_interval: num(m.check_interval),
			state: text(m.state, 16),
			external_ip: text(m.external_ip, 64),
			last_error: text(m.last_error, LIMITS.error),
			conflict: text(m.conflict, LIMITS.text),
			failures: num(m.failures) ?? 0,
			next_in: num(m.next_in)
		});
	}
	return out;
}

// Relay counters arrive as "<interface>:<port>:<counter>"; the page shows them per interface.
function relayOf(status) {
	const relay = (type(status.relay) == 'object') ? status.relay : {};
	const out = { interfaces: texts(relay.interfaces, LIMITS.relay_interfaces, 32), by_interface: {}, other: {} };
	const counters = (type(relay.counters) == 'object') ? relay.counters : {};
	const names = keys(counters);
	let seen = 0;
	for (let i = 0; i < length(names) && seen < LIMITS.relay_counter_keys; i++) {
		const value = num(counters[names[i]]);
		if (value == null)
			continue;
		seen++;
		const parts = split(names[i], ':');
		if (length(parts) == 3 && length(parts[0]) <= 32 && length(parts[2]) <= 64) {
			if (out.by_interface[parts[0]] == null) {
				if (length(keys(out.by_interface)) >= LIMITS.relay_interfaces)
					continue;
				out.by_interface[parts[0]] = {};
			}
			const group = out.by_interface[parts[0]];
			group[parts[2]] = (group[parts[2]] ?? 0) + value;
		}
		else if (length(names[i]) <= 64) {
			out.other[names[i]] = value;
		}
	}
	return out;
}

function relaysOf(status) {
	const out = [];
	const relays = (type(status.relays) == 'array') ? status.relays : [];
	for (let i = 0; i < length(relays) && length(out) < LIMITS.zones; i++) {
		const r = relays[i];
		if (type(r) != 'object')
			continue;
		push(out, {
			name: text(r.name, LIMITS.text),
			enabled: r.enabled !== false,
			zones: texts(r.zones, LIMITS.list, 32),
			interfaces: texts(r.interfaces, LIMITS.list, 32)
		});
	}
	return out;
}

function countersOf(counters) {
	const out = {};
	if (type(counters) != 'object')
		return out;
	const names = sort(keys(counters));
	let kept = 0;
	for (let i = 0; i < length(names) && kept < LIMITS.counters; i++) {
		const value = num(counters[names[i]]);
		if (value != null && length(names[i]) <= 64) {
			out[names[i]] = value;
			kept++;
		}
	}
	return out;
}

function failuresOf(failures) {
	const out = [];
	if (type(failures) != 'object')
		return out;
	const names = keys(failures);
	for (let i = 0; i < length(names); i++)
		push(out, { text: text(names[i], LIMITS.error), count: num(failures[names[i]]) ?? 0 });
	sort(out, function(a, b) { return b.count - a.count; });
	return slice(out, 0, LIMITS.failures);
}

// The daemon's summary, reduced to what the overview shows, bounded, with each
// device's OpenWrt network and loxgw zone (its VLAN) filled in.
export function summary(status, interfaces) {
	const zones = zonesOf(status);
	const devices = devicesOf(status, zones, interfaces);
	return {
		version: text(status.version, 32),
		pid: num(status.pid),
		uptime: num(status.uptime),
		written_at: num(status.written_at),
		enabled: status.enabled !== false,
		firewall: text(status.firewall, 16),
		table: text(status.table, 32),
		installed: bool(status.installed),
		dns_mode: text(status.dns_mode, 16),
		queue_mode: text(status.queue_mode, 16),
		dns_path: text(status.dns_path, 64),
		set_refresh: text(status.set_refresh, 32),
		dns_entries_total: num(status.dns_entries_total) ?? 0,
		ruleset_applies: num(status.ruleset_applies) ?? 0,
		zones: zones,
		devices: devices.devices,
		device_counts: devices.counts,
		devices_refused_cap: num(status.devices_refused_cap) ?? 0,
		upnp: upnpOf(status),
		relays: relaysOf(status),
		relay: relayOf(status),
		counters: countersOf(status.counters),
		failures: failuresOf(status.failures),
		last_error: text(status.last_error, LIMITS.error)
	};
}

// The `status` method's answer.
//
// input: { now, file, text (the status file, or null when missing), read_error,
//          service (procd's service list answer), enabled (uci main.enabled),
//          interfaces (netifd's interface dump list) }
//
// state: running   the daemon runs and its status is fresh
//        stale     procd runs it, but its status is older than STALE_AFTER: hung
//        starting  procd runs it, no status file yet
//        unreadable procd runs it, its status file cannot be read or parsed
//        crashed   procd has its instance, not running (exit_code says how it ended)
//        disabled  not running, and the config says enabled '0'
//        stopped   not running (never started, or stopped)
export function overview(input) {
	const service = serviceState(input.service);
	const out = {
		state: null, detail: null, file: text(input.file, 256), age: null,
		service: service, status: null, fw4_include: null
	};
	let parsed = null;
	if (input.text != null) {
		try {
			parsed = json(input.text);
		}
		catch (e) {
			out.detail = 'the status file is not valid JSON';
		}
		if (parsed != null && type(parsed) != 'object') {
			parsed = null;
			out.detail = 'the status file holds no JSON object';
		}
	}
	else if (input.read_error != null) {
		out.detail = text(input.read_error, LIMITS.error);
	}

	if (!service.running) {
		if (service.instances > 0)
			out.state = 'crashed';
		else if (isDisabled(input.enabled))
			out.state = 'disabled';
		else
			out.state = 'stopped';
		if (parsed != null && isnum(parsed.written_at))
			out.age = input.now - parsed.written_at;
		return out;
	}
	if (parsed == null) {
		out.state = (input.text == null && input.read_error == null) ? 'starting' : 'unreadable';
		return out;
	}
	out.age = isnum(parsed.written_at) ? input.now - parsed.written_at : null;
	out.state = (out.age == null || out.age > STALE_AFTER) ? 'stale' : 'running';
	out.status = summary(parsed, input.interfaces);
	return out;
}

function compareText(a, b) {
	return (a < b) ? -1 : ((a > b) ? 1 : 0);
}

// The `dns` method's answer: the daemon's live DNS allowances (`loxgw status --full`)
// grouped per device, then per name, then per protocol and ports, each group with its
// addresses and the latest expiry; bounded at every level, with totals.
export function dnsGroups(entries) {
	const by_device = {};
	let total = 0;
	if (type(entries) != 'array')
		entries = [];
	for (let i = 0; i < length(entries); i++) {
		const e = entries[i];
		if (type(e) != 'object')
			continue;
		const device = text(e.device, 64), name = text(e.name, 255);
		const proto = text(e.proto, 8), ports = text(e.ports, 16), address = text(e.address, 64);
		if (device == null || name == null || address == null)
			continue;
		total++;
		by_device[device] = by_device[device] ?? {};
		const names = by_device[device];
		names[name] = names[name] ?? {};
		const rules = names[name];
		const key = (proto ?? '') + '/' + (ports ?? '');
		rules[key] = rules[key] ?? { proto: proto, ports: ports, addresses: [], addresses_total: 0, expires_in: null };
		const rule = rules[key];
		rule.addresses_total++;
		if (length(rule.addresses) < LIMITS.dns_addresses && index(rule.addresses, address) < 0)
			push(rule.addresses, address);
		const expires = num(e.expires_in);
		if (expires != null && (rule.expires_in == null || expires > rule.expires_in))
			rule.expires_in = expires;
	}

	const devices = sort(keys(by_device), compareText);
	const out = { total: total, devices_total: length(devices), devices: [] };
	for (let i = 0; i < length(devices) && i < LIMITS.dns_devices; i++) {
		const names = sort(keys(by_device[devices[i]]), compareText);
		const group = { device: devices[i], names_total: length(names), entries: 0, names: [] };
		for (let j = 0; j < length(names); j++) {
			const rules_by_key = by_device[devices[i]][names[j]];
			const rule_keys = sort(keys(rules_by_key), compareText);
			const rules = [];
			for (let k = 0; k < length(rule_keys); k++) {
				group.entries += rules_by_key[rule_keys[k]].addresses_total;
				if (length(rules) < LIMITS.dns_rules)
					push(rules, rules_by_key[rule_keys[k]]);
			}
			if (j < LIMITS.dns_names)
				push(group.names, { name: names[j], rules_total: length(rule_keys), rules: rules });
		}
		push(out.devices, group);
	}
	return out;
}

// The `check` method's answer: `loxgw check` output as PATH:LINE messages.
export function checkReport(output, exit_code) {
	const out = { valid: exit_code === 0, exit_code: num(exit_code), messages: [], messages_total: 0 };
	const lines = split((type(output) == 'string') ? output : '', '\n');
	for (let i = 0; i < length(lines); i++) {
		const line = trim(lines[i]);
		if (line == '')
			continue;
		out.messages_total++;
		if (length(out.messages) >= LIMITS.check_messages)
			continue;
		const m = match(line, /^(\/[^:]*):([0-9]+): (.*)$/);
		if (m)
			push(out.messages, { path: text(m[1], 256), line: int(m[2]), message: text(m[3], LIMITS.error) });
		else
			push(out.messages, { path: null, line: null, message: text(line, LIMITS.error) });
	}
	return out;
}
