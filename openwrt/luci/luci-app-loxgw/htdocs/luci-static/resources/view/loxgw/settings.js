'use strict';
'require view';
'require form';
'require rpc';
'require uci';
'require ui';
'require tools.widgets as widgets';

// /etc/config/loxgw as a form. Each field checks what `loxgw check` checks (the same
// types and ranges as loxgw/core/config.py); what only the whole file can tell (a zone
// named twice across files, a value edited by hand) `loxgw check` reports above the
// form after Save & Apply, which reloads the daemon through its procd trigger.

const callCheck = rpc.declare({ object: 'luci.loxgw', method: 'check' });

const WEEK = 604800;
const DAY = 86400;
const IFNAME = /^[A-Za-z0-9_.:@-]{1,15}$/;
const TABLE = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
const PRODUCTS = [
	[ 'miniserver', _('Miniserver') ],
	[ 'audioserver', _('Audioserver') ],
	[ 'stereo_extension', _('Stereo Extension') ],
	[ 'intercom', _('Intercom') ],
	[ 'intercom_gen1', _('Intercom (first generation)') ]
];

function whole(low, high) {
	return 'and(uinteger,range(%d,%d))'.format(low, high);
}

function validIfname(section_id, value) {
	if (value == null || value === '' || IFNAME.test(value))
		return true;
	return _('Not a Linux interface name (up to 15 letters, digits, _ . : @ -)');
}

function validPath(section_id, value) {
	if (value == null || value === '' || value.charAt(0) == '/')
		return true;
	return _('Expecting an absolute path');
}

function formValue(option, section_id) {
	const value = option.formvalue(section_id);
	return Array.isArray(value) ? value.filter(function(v) { return v !== ''; }) : value;
}

// A LuCI grid shows the raw value of a ListValue (devices, miniserver); show the label
// the user chose from instead.
function choiceText(section_id) {
	let value = this.cfgvalue(section_id);
	if (value == null)
		value = this.default;
	const i = (this.keylist || []).indexOf(value);
	return (value != null) ? '%h'.format((i >= 0) ? this.vallist[i] : value) : null;
}

function sectionNames(type) {
	return uci.sections('loxgw', type).filter(function(s) { return !s['.anonymous']; }).map(function(s) { return s['.name']; });
}

function checkNotice(check) {
	if (check == null || typeof(check) != 'object' || check.valid)
		return E([]);
	const messages = Array.isArray(check.messages) ? check.messages : [];
	return E('div', { 'class': 'alert-message warning', 'data-check': 'invalid' }, [
		E('p', {}, [ _('The saved configuration has errors (loxgw check); loxgw keeps running with its previous settings until they are fixed:') ]),
		E('ul', {}, messages.map(function(m) {
			return E('li', {}, [ m.path ? '%s:%d: %s'.format(m.path, m.line, m.message) : m.message ]);
		}))
	]);
}

return view.extend({
	load: function() {
		return Promise.all([
			L.resolveDefault(callCheck(), null),
			uci.load('loxgw')
		]);
	},

	render: function(data) {
		const check = data[0];
		let m, s, o;

		if (!uci.get('loxgw', 'main'))
			uci.add('loxgw', 'loxgw', 'main');
		// Each holds at most one section; the form edits the one there is, or a new one.
		[ 'knx', 'reflector' ].forEach(function(type) {
			if (!uci.sections('loxgw', type).length)
				uci.add('loxgw', type);
		});

		m = new form.Map('loxgw', _('Loxone gateway: settings'),
			_('Which networks hold Loxone devices and their clients, what they may reach, and how discovery and remote access work. Save & Apply reloads loxgw.'));

		// --- main ---------------------------------------------------------------
		s = m.section(form.NamedSection, 'main', 'loxgw', _('General'));
		s.addremove = false;

		o = s.option(form.Flag, 'enabled', _('Enabled'),
			_('Off: loxgw installs no firewall rules and removes the ones it installed.'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.ListValue, 'firewall', _('Firewall'),
			_('With fw4, loxgw marks what it allows and fw4\'s zones decide the rest; standalone: loxgw is the firewall of its zones.'));
		o.value('auto', _('automatic (fw4 where installed)'));
		o.value('fw4', _('fw4'));
		o.value('standalone', _('standalone'));
		o.default = 'auto';

		o = s.option(form.ListValue, 'dns_mode', _('DNS handling'),
			_('How loxgw reads the DNS answers that open the cloud for each device.'));
		o.value('inline', _('inline: no first connection races its allowance'));
		o.value('passive', _('passive: a first connection may need a retry'));
		o.value('off', _('off: no cloud access'));
		o.default = 'inline';

		o = s.option(form.ListValue, 'dns_hold', _('What waits'),
			_('In a devices zone with inline DNS handling: the device\'s first packet to a new address, the DNS answer itself, or the answer while answers come slowly enough and the first packet beyond that.'));
		o.value('connection', _('the first packet of a connection'));
		o.value('answer', _('the DNS answer'));
		o.value('auto', _('the DNS answer, up to a rate'));
		o.default = 'connection';
		o.depends('dns_mode', 'inline');

		o = s.option(form.Flag, 'redirect_dns', _('Redirect DNS'),
			_('Send DNS from devices zones to this router\'s resolver.'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.Flag, 'rebind_exception', _('Rebind exception'),
			_('Let dnsmasq answer dyndns.loxonecloud.com names with private addresses, so the App\'s local TLS names work.'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.ListValue, 'log_level', _('Log level'));
		[ 'debug', 'info', 'notice', 'warning', 'error' ].forEach(function(level) { o.value(level); });
		o.default = 'info';

		// --- advanced -----------------------------------------------------------
		s = m.section(form.NamedSection, 'main', 'loxgw', _('Advanced'));
		s.addremove = false;

		o = s.option(form.Value, 'min_timeout', _('Shortest allowance (s)'),
			_('Floor of the lifetime of a DNS allowance; answers with shorter TTLs stay this long.'));
		o.datatype = whole(1, WEEK);
		o.placeholder = '60';
		o.validate = function(section_id, value) {
			const max = this.section.children.filter(function(c) { return c.option == 'max_timeout'; })[0];
			const high = +(formValue(max, section_id) || 86400);
			if (value !== '' && /^[0-9]+$/.test(value) && +value > high)
				return _('Larger than the longest allowance (%d)').format(high);
			return true;
		};

		o = s.option(form.Value, 'max_timeout', _('Longest allowance (s)'),
			_('Ceiling of the lifetime of a DNS allowance.'));
		o.datatype = whole(1, WEEK);
		o.placeholder = '86400';

		o = s.option(form.DynamicList, 'trusted_resolver', _('Trusted resolvers'),
			_('Other resolvers whose answers may open the firewall, besides this router\'s own.'));
		o.datatype = 'ipaddr("nomask")';

		o = s.option(form.DynamicList, 'allowed_target', _('Allowed private targets'),
			_('Networks a DNS answer may open although private or special, e.g. 10.20.0.0/16 for a cloud name resolving into a VPN.'));
		o.datatype = 'ipaddr';

		o = s.option(form.Value, 'device_grace', _('Grace period (s)'),
			_('How long a device that went away keeps its firewall openings.'));
		o.datatype = whole(0, WEEK);
		o.placeholder = '300';

		o = s.option(form.Value, 'probe_interval', _('Search interval (s)'),
			_('Seconds between LoxLIVE and SSDP searches in devices zones; 0 turns searching off.'));
		o.datatype = whole(0, DAY);
		o.placeholder = '60';

		o = s.option(form.Value, 'queue_num', _('Queue number'),
			_('NFQUEUE number of held packets and NFLOG group of DNS copies; the next two numbers are used too.'));
		o.datatype = whole(0, 65535);
		o.placeholder = '7053';

		o = s.option(form.Value, 'table', _('Table name'), _('Name of loxgw\'s nftables table (inet family).'));
		o.placeholder = 'loxgw';
		o.validate = function(section_id, value) {
			return (value === '' || TABLE.test(value)) ? true : _('Not a table name (a letter, then up to 31 letters, digits or _)');
		};

		o = s.option(form.Value, 'status_socket', _('Status socket'),
			_('Unix socket of "loxgw status"; the status file this page reads lies beside it.'));
		o.placeholder = '/var/run/loxgw/status.sock';
		o.validate = validPath;

		o = s.option(form.Value, 'dhcp_leases', _('DHCP leases'), _('dnsmasq\'s lease file, read to find devices.'));
		o.placeholder = '/tmp/dhcp.leases';
		o.validate = validPath;

		// How each product reaches the internet; the defaults are loxgw's (core/configsections.py).
		[
			[ 'egress_miniserver', _('Miniservers reach'), 'catalog' ],
			[ 'egress_intercom', _('Intercoms reach'), 'catalog' ],
			[ 'egress_intercom_gen1', _('Intercoms (first generation) reach'), 'catalog' ],
			[ 'egress_audioserver', _('Audioservers reach'), 'resolved' ],
			[ 'egress_stereo_extension', _('Stereo Extensions reach'), 'resolved' ]
		].forEach(function(egress) {
			o = s.option(form.ListValue, egress[0], egress[1],
				(egress[2] == 'resolved')
					? _('"Any name they resolve" by default: internet radio, Spotify and Loxone Radio use servers no list names.')
					: null);
			o.value('catalog', _('the Loxone services they need (names and ports of the catalogue)'));
			o.value('resolved', _('any name they resolve, on any port'));
			o.value('open', _('anything (no restriction)'));
			o.default = egress[2];
		});

		// --- zones --------------------------------------------------------------
		s = m.section(form.GridSection, 'zone', _('Zones'),
			_('Networks holding Loxone devices ("devices") or the phones and PCs running the Loxone App and Config ("clients").'));
		s.anonymous = false;
		s.addremove = true;
		s.nodescriptions = true;
		s.addbtntitle = _('Add zone');

		o = s.option(form.ListValue, 'role', _('Role'));
		o.value('devices', _('Loxone devices'));
		o.value('clients', _('clients (App, Config)'));
		o.rmempty = false;
		o.textvalue = choiceText;

		o = s.option(widgets.NetworkSelect, 'network', _('Networks'), _('The router\'s networks in this zone.'));
		o.multiple = true;
		o.nocreate = true;
		o.validate = function(section_id, value) {
			const ifaces = this.section.children.filter(function(c) { return c.option == 'interface'; })[0];
			const names = formValue(this, section_id);
			if ((!names || !names.length) && !(formValue(ifaces, section_id) || []).length)
				return _('A zone needs a network or an interface');
			return true;
		};

		o = s.option(form.DynamicList, 'interface', _('Interfaces'),
			_('Linux interfaces in this zone, where no network names them.'));
		o.validate = validIfname;

		o = s.option(form.Flag, 'cloud', _('Cloud'), _('The zone may reach Loxone\'s cloud services.'));
		o.default = '0';
		o.editable = true;

		o = s.option(form.Flag, 'other_hosts', _('Other hosts too'),
			_('Devices zones: hosts that are not Loxone devices get the devices\' cloud allowances too.'));
		o.default = '0';
		o.modalonly = true;
		o.depends('role', 'devices');

		// --- devices ------------------------------------------------------------
		s = m.section(form.GridSection, 'device', _('Devices'),
			_('Loxone devices loxgw should know without detecting them. Detection finds the others.'));
		s.anonymous = false;
		s.addremove = true;
		s.nodescriptions = true;
		s.addbtntitle = _('Add device');

		o = s.option(form.ListValue, 'type', _('Product'));
		PRODUCTS.forEach(function(p) { o.value(p[0], p[1]); });
		o.rmempty = false;
		o.textvalue = choiceText;

		o = s.option(form.Value, 'name', _('Label'));

		o = s.option(form.Value, 'mac', _('MAC address'));
		o.datatype = 'macaddr';
		o.validate = function(section_id, value) {
			const ip = this.section.children.filter(function(c) { return c.option == 'ip'; })[0];
			if (!value && !formValue(ip, section_id))
				return _('A device needs a MAC address or an IP address');
			return true;
		};

		o = s.option(form.Value, 'ip', _('IP address'));
		o.datatype = 'ipaddr("nomask")';

		o = s.option(form.Value, 'zone', _('Zone'));
		o.datatype = 'uciname';
		o.placeholder = _('any');
		sectionNames('zone').forEach(function(name) { o.value(name); });

		o = s.option(form.Value, 'http_port', _('HTTP port'), _('The Miniserver\'s HTTP port.'));
		o.datatype = whole(1, 65535);
		o.placeholder = '80';
		o.modalonly = true;

		// --- relay --------------------------------------------------------------
		s = m.section(form.GridSection, 'relay', _('Discovery relay'),
			_('Carries the Loxone discovery broadcasts (UDP 7070-7077 and 7079) between zones, so the App and Config find the devices.'));
		s.anonymous = true;
		s.addremove = true;
		s.nodescriptions = true;
		s.addbtntitle = _('Add relay');

		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o.rmempty = false;
		o.editable = true;

		o = s.option(form.MultiValue, 'zone', _('Zones'));
		sectionNames('zone').forEach(function(name) { o.value(name); });

		o = s.option(form.DynamicList, 'interface', _('Interfaces'));
		o.validate = validIfname;
		o.modalonly = true;

		o = s.option(form.DynamicList, 'port', _('Ports'), _('Default: 7070-7077 and 7079.'));
		o.datatype = 'portrange';
		o.modalonly = true;

		o = s.option(form.Value, 'rate_limit', _('Rate per sender (packets/s)'));
		o.datatype = whole(1, 100000);
		o.placeholder = '20';
		o.modalonly = true;

		o = s.option(form.Value, 'global_rate', _('Overall rate (packets/s)'));
		o.datatype = whole(1, 1000000);
		o.placeholder = '2000';
		o.modalonly = true;

		o = s.option(form.Flag, 'allow_upstream', _('Upstream too'),
			_('Also relay to and from the interface with the default route.'));
		o.default = '0';
		o.modalonly = true;

		o = s.option(form.ListValue, 'kernel', _('Copies made by'),
			_('The kernel copies where it can (an nftables netdev table); otherwise, and while a second relay copies on the same networks, loxgw does.'));
		o.value('auto', _('the kernel where it can'));
		o.value('off', _('loxgw\'s process'));
		o.default = 'auto';
		o.modalonly = true;

		// --- UPnP ---------------------------------------------------------------
		s = m.section(form.GridSection, 'upnp', _('Remote access (UPnP)'),
			_('Maps a port on the upstream router to a device, for access from the internet without Remote Connect.'));
		s.anonymous = false;
		s.addremove = true;
		s.nodescriptions = true;
		s.addbtntitle = _('Add mapping');

		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '0';
		o.editable = true;

		o = s.option(form.Value, 'device', _('Device'));
		o.datatype = 'uciname';
		o.placeholder = _('none');
		sectionNames('device').forEach(function(name) { o.value(name); });
		o.validate = function(section_id, value) {
			const enabled = this.section.children.filter(function(c) { return c.option == 'enabled'; })[0];
			if (!value && formValue(enabled, section_id) == '1')
				return _('An enabled mapping needs a device');
			return true;
		};

		o = s.option(form.Value, 'external_port', _('Upstream port'));
		o.datatype = whole(1, 65535);
		o.validate = function(section_id, value) {
			const enabled = this.section.children.filter(function(c) { return c.option == 'enabled'; })[0];
			if (!value && formValue(enabled, section_id) == '1')
				return _('An enabled mapping needs an upstream port');
			return true;
		};

		o = s.option(form.Value, 'internal_port', _('Device port'));
		o.datatype = whole(1, 65535);
		o.default = '443';

		o = s.option(form.ListValue, 'proto', _('Protocol'));
		o.value('tcp', 'TCP');
		o.value('udp', 'UDP');
		o.default = 'tcp';
		o.textvalue = choiceText;

		o = s.option(form.Value, 'lease', _('Lease (s)'));
		o.datatype = whole(0, WEEK);
		o.placeholder = '3600';
		o.modalonly = true;

		o = s.option(form.Value, 'check_interval', _('Check interval (s)'));
		o.datatype = whole(1, DAY);
		o.placeholder = '60';
		o.modalonly = true;

		// --- KNX-IP routing -----------------------------------------------------
		// One anonymous section, as the sample config writes it (loxgw check refuses a second).
		s = m.section(form.TypedSection, 'knx', _('KNX-IP routing'),
			_('Copies KNXnet/IP routing telegrams (224.0.23.12:3671, e.g. a Miniserver Gen. 1\'s KNX) between zones.'));
		s.anonymous = true;
		s.addremove = false;

		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '0';
		o.rmempty = false;

		o = s.option(form.MultiValue, 'zone', _('Zones'), _('The zones whose interfaces it copies between: two or more.'));
		sectionNames('zone').forEach(function(name) { o.value(name); });
		o.validate = function(section_id, value) {
			const enabled = this.section.children.filter(function(c) { return c.option == 'enabled'; })[0];
			if (formValue(enabled, section_id) == '1' && (formValue(this, section_id) || []).length < 2)
				return _('Copying needs two zones or more');
			return true;
		};

		o = s.option(form.Value, 'ttl', _('TTL of the copies'),
			_('Senders often use 1, which no router forwards.'));
		o.datatype = whole(1, 255);
		o.placeholder = '16';

		o = s.option(form.Value, 'rate_limit', _('Rate per sender (telegrams/s)'),
			_('KNXnet/IP routing allows a device 50 a second.'));
		o.datatype = whole(1, 10000);
		o.placeholder = '50';

		// --- reflector ----------------------------------------------------------
		s = m.section(form.TypedSection, 'reflector', _('Service discovery reflector'),
			_('Repeats the mDNS and SSDP announcements of Loxone devices into the clients zones (AirPlay, Spotify Connect, the App\'s search).'));
		s.anonymous = true;
		s.addremove = false;

		o = s.option(form.Flag, 'enabled', _('Enabled'),
			_('It runs only where there is a devices zone and a clients zone.'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.Flag, 'mdns', _('mDNS'), _('Reflect mDNS (224.0.0.251:5353).'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.Flag, 'ssdp', _('SSDP'), _('Reflect SSDP (239.255.255.250:1900).'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.DynamicList, 'allow_host', _('Other hosts'),
			_('IPv4 addresses in devices zones whose records cross as a Loxone device\'s do, e.g. a TV. Their ports are not opened: the firewall\'s zones decide.'));
		o.datatype = 'ip4addr("nomask")';

		o = s.option(form.Value, 'rate_limit', _('Rate per sender (datagrams/s)'),
			_('Per sender and protocol.'));
		o.datatype = whole(1, 10000);
		o.placeholder = '20';

		return m.render().then(function(node) {
			return E([], [ checkNotice(check), node ]);
		});
	}
});
