'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require ui';

// Is Loxone working? One line per device with its functions in words, problems on
// top, Start/Stop/Restart, and the details (DNS allowances, relay, UPnP, zones,
// counters) folded below, with counts.
//
// Every string a device or the daemon supplies is rendered as a text node: E() gets
// arrays of strings and nodes, never a bare string (which E() would assign as HTML).

const callStatus = rpc.declare({ object: 'luci.loxgw', method: 'status' });
const callDns = rpc.declare({ object: 'luci.loxgw', method: 'dns' });
const callCheck = rpc.declare({ object: 'luci.loxgw', method: 'check' });
const callControl = rpc.declare({ object: 'luci.loxgw', method: 'control', params: [ 'action' ] });

const POLL_SECONDS = 5;
const DNS_REFRESH_SECONDS = 30;
const ROWS_SHOWN = 25;
const PROBLEMS_SHOWN = 8;

const PRODUCTS = {
	miniserver: _('Miniserver'),
	audioserver: _('Audioserver'),
	stereo_extension: _('Stereo Extension'),
	intercom: _('Intercom'),
	intercom_gen1: _('Intercom (first generation)')
};

// Catalogue host names -> the function they serve, for the "Cloud" column.
const CLOUD_FUNCTIONS = [
	[ /(^|\.)(dyndns|remcov3|ccbroker)\.loxonecloud\.com$|^(connect|registry|dns|api|secureapi|ca)\.loxonecloud\.com$/, _('Remote Connect') ],
	[ /^update(files)?\.loxone\.com$/, _('updates') ],
	[ /^weather\.loxone(cloud)?\.com$/, _('weather') ],
	[ /^(push|mail)\.loxonecloud\.com$|^caller\.loxone\.com$/, _('push and mail') ],
	[ /(^|\.)pool\.ntp\.org$|^time\.nist\.gov$/, _('time') ]
];

const UPNP_STATES = {
	absent: _('not requested yet'),
	requested: _('requesting'),
	active: _('active'),
	renewing: _('renewing'),
	failed: _('failed'),
	removed: _('removed'),
	disabled: _('disabled')
};

const RELAY_COUNTERS = {
	received: _('received'),
	relayed: _('relayed'),
	send_errors: _('send errors'),
	own_copy_seen: _('own copies seen'),
	peer_copy_seen: _('copies from another relay'),
	left_to_peer: _('left to the other relay'),
	dropped_not_relay_interface: _('not a relay interface'),
	dropped_already_relayed: _('already relayed'),
	dropped_oversized: _('too large'),
	dropped_port: _('other port'),
	dropped_not_broadcast: _('not a broadcast'),
	dropped_upstream: _('from upstream'),
	dropped_own_or_unspecified_source: _('own or unspecified sender'),
	dropped_rate_source: _('over the rate of one sender'),
	dropped_rate_global: _('over the overall rate'),
	dropped_no_egress: _('nowhere to relay to')
};

const COUNTERS = {
	device_changes: _('Device changes'),
	ruleset_applies: _('Firewall updates'),
	declares: _('Full firewall loads'),
	diffs: _('Incremental firewall updates'),
	apply_errors: _('Firewall update errors'),
	reloads: _('Configuration reloads'),
	reloads_failed: _('Failed reloads'),
	reloads_rejected: _('Rejected reloads (invalid configuration)'),
	loxlive_searches: _('LoxLIVE searches'),
	loxlive_answers: _('LoxLIVE answers'),
	loxlive_refused_spoofed: _('LoxLIVE answers refused (forged sender)'),
	ssdp_loxone: _('SSDP descriptions of Loxone devices'),
	ssdp_not_loxone: _('SSDP descriptions of other devices'),
	ssdp_fetch_errors: _('SSDP description fetch errors'),
	dns_queries_seen: _('DNS queries seen'),
	dns_answers_seen: _('DNS answers seen'),
	dns_answers_matched: _('DNS answers for Loxone names'),
	dns_inserted: _('DNS allowances added'),
	dns_held_packets: _('First packets held for a DNS answer'),
	dns_held_dns_packets: _('DNS packets held until their allowances were in'),
	dns_refused_device_cap: _('DNS allowances refused (device limit)'),
	dns_netlink_errors: _('DNS allowance errors'),
	dns_copies_lost: _('DNS copies lost'),
	dns_copies_malformed: _('DNS copies malformed'),
	dns_handler_errors: _('DNS handling errors'),
	status_client_errors: _('Status request errors'),
	neighbour_dumps: _('Neighbour table reads'),
	pass_wait_us: _('Firewall updates: time waiting (µs, total)'),
	pass_plan_us: _('Firewall updates: time planning (µs, total)'),
	pass_diff_us: _('Firewall updates: time comparing (µs, total)'),
	pass_kernel_us: _('Firewall updates: time in the kernel (µs, total)')
};

function duration(seconds) {
	if (seconds == null || isNaN(seconds))
		return _('unknown');
	seconds = Math.max(0, Math.round(seconds));
	if (seconds < 90)
		return _('%d s').format(seconds);
	if (seconds < 5400)
		return _('%d min').format(Math.round(seconds / 60));
	const hours = Math.floor(seconds / 3600);
	if (hours < 48)
		return _('%d h %d min').format(hours, Math.floor((seconds % 3600) / 60));
	return _('%d days %d h').format(Math.floor(hours / 24), hours % 24);
}

// A counter or state in words: from the table, else the key made readable.
function words(key, table) {
	if (table[key])
		return table[key];
	const text = String(key).replace(/_/g, ' ');
	return text.charAt(0).toUpperCase() + text.slice(1);
}

function productWords(device) {
	if (!device.product_known)
		return _('Loxone device, product unknown');
	return words(device.product, PRODUCTS);
}

function deviceLabel(device) {
	return device.name || device.ip || device.mac || _('unnamed device');
}

// A device in a sentence: its name and address, or its address alone.
function deviceRef(device) {
	const address = device.ip || device.mac || '-';
	return device.name ? '%s (%s)'.format(device.name, address) : address;
}

// Children for E(): strings become text nodes; null and false entries are dropped.
function kids(list) {
	return (Array.isArray(list) ? list : [ list ]).filter(function(item) {
		return item != null && item !== false && item !== '';
	});
}

function table(columns, rows, empty) {
	const head = E('tr', { 'class': 'tr table-titles' }, columns.map(function(title) {
		return E('th', { 'class': 'th' }, [ title ]);
	}));
	const body = rows.length ? rows.map(function(row) {
		if (row.group != null)
			return E('tr', { 'class': 'tr cbi-rowstyle-2' }, [
				E('td', { 'class': 'td', 'colspan': columns.length, 'data-title': columns[0] }, [
					E('strong', {}, kids(row.group))
				])
			]);
		return E('tr', { 'class': 'tr' }, row.map(function(cell, i) {
			return E('td', { 'class': 'td', 'data-title': columns[i] }, kids(cell));
		}));
	}) : [
		E('tr', { 'class': 'tr placeholder' }, [
			E('td', { 'class': 'td', 'data-title': columns[0] }, [ E('em', {}, [ empty ]) ])
		])
	];
	return E('table', { 'class': 'table' }, [ head ].concat(body));
}

function functionsOf(group) {
	const found = [];
	(group ? group.names : []).forEach(function(entry) {
		let label = _('other Loxone services');
		for (let i = 0; i < CLOUD_FUNCTIONS.length; i++)
			if (CLOUD_FUNCTIONS[i][0].test(entry.name)) {
				label = CLOUD_FUNCTIONS[i][1];
				break;
			}
		if (found.indexOf(label) < 0)
			found.push(label);
	});
	return found;
}

// The plugin sends devices as { fields, rows } (compact at 250 devices); the page uses objects.
function deviceObjects(table) {
	if (!table || !Array.isArray(table.rows))
		return [];
	return table.rows.map(function(row) {
		const device = {};
		table.fields.forEach(function(field, i) { device[field] = row[i]; });
		return device;
	});
}

// An rpc reply, or { failed, reason } in words: a failed ubus call arrives as a number
// (no `expect` in the declarations), a failed HTTP request or ACL check as a rejection.
function answer(call) {
	return Promise.resolve(call).then(function(reply) {
		if (typeof(reply) == 'number')
			return { failed: reply, reason: ubusReason(reply) };
		if (!L.isObject(reply))
			return { failed: -1, reason: _('The router sent no data.') };
		return reply;
	}, function(err) {
		return { failed: -1, reason: errorReason(err) };
	});
}

function noPlugin(code) {
	return _('The router has no luci.loxgw plugin loaded (%s): reinstall luci-app-loxgw, then restart rpcd.').format(code);
}

function ubusReason(code) {
	switch (code) {
	case 3:
	case 4:
		return noPlugin(_('code %d').format(code));
	case 6:
		return _('Access denied (code 6): this login lacks the luci-app-loxgw permission.');
	case 7:
		return _('Timed out (code 7): the router did not answer in time.');
	case 10:
		return _('The connection to ubus was lost (code 10).');
	default:
		return _('The call failed: %s (code %d).').format(rpc.getStatusText(code), code);
	}
}

function errorReason(err) {
	const message = String((err && err.message) || err || '');
	// uhttpd looks the object up before the call: a missing plugin is a JSON-RPC error.
	if (/Object not found|-32000/.test(message))
		return noPlugin(_('object not found'));
	if (/Access denied|-32002/.test(message))
		return _('Access denied: the session expired or lacks the luci-app-loxgw permission. Log in again.');
	if (/timed? ?out|timeout|aborted/i.test(message))
		return _('The router did not answer (the request timed out or was aborted).');
	return _('The request failed: %s').format(message.split('\n')[0]);
}

return view.extend({
	load: function() {
		return answer(callStatus());
	},

	render: function(reply) {
		this.open = {};
		this.expanded = {};
		this.dns = null;
		this.check = null;
		this.root = E('div', { 'id': 'loxgw-overview' });
		this.update(reply);
		poll.add(L.bind(this.refresh, this), POLL_SECONDS);
		return E([], [
			E('h2', {}, [ _('Loxone gateway') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('Whether your Loxone devices reach the cloud, the Loxone App reaches them, and discovery works across your networks.')
			]),
			this.root
		]);
	},

	refresh: function() {
		return answer(callStatus()).then(L.bind(this.update, this));
	},

	update: function(reply) {
		if (reply.status)
			reply.status.devices = deviceObjects(reply.status.devices);
		this.reply = reply;
		this.followUp(reply);
		dom.content(this.root, this.renderPage(reply));
	},

	// Calls made only when they can tell something new: `check` when the service does
	// not run, the DNS details on first sight and while their section is open.
	followUp: function(reply) {
		const state = reply.failed != null ? null : reply.state;
		const wantsCheck = (state == 'stopped' || state == 'crashed');
		const checkKey = wantsCheck ? state + '/' + reply.service.exit_code : null;
		if (checkKey != null && this.checkKey != checkKey) {
			this.checkKey = checkKey;
			answer(callCheck()).then(L.bind(function(check) {
				this.check = check;
				this.rerender();
			}, this));
		}
		else if (checkKey == null) {
			this.checkKey = null;
			this.check = null;
		}
		const now = Date.now() / 1000;
		const dnsDue = this.dns == null || (this.open.dns && now - this.dns.fetched >= DNS_REFRESH_SECONDS);
		if (state == 'running' && dnsDue && !this.dnsLoading)
			this.loadDns();
	},

	loadDns: function() {
		this.dnsLoading = true;
		return answer(callDns()).then(L.bind(function(dns) {
			this.dnsLoading = false;
			this.dns = { reply: dns, fetched: Date.now() / 1000 };
			this.rerender();
		}, this));
	},

	rerender: function() {
		if (this.reply)
			dom.content(this.root, this.renderPage(this.reply));
	},

	handleControl: function(action) {
		return answer(callControl(action)).then(L.bind(function(result) {
			if (result.failed != null)
				ui.addNotification(null, E('p', {}, [ _('Could not %s loxgw: %s').format(action, result.reason) ]), 'danger');
			this.checkKey = null;
			return this.refresh();
		}, this));
	},

	handleStop: function() {
		ui.showModal(_('Stop loxgw?'), [
			E('p', {}, [ _('Stopping loxgw removes its firewall rules: Loxone devices lose their cloud access and the Loxone App cannot reach them until loxgw runs again.') ]),
			E('div', { 'class': 'right' }, [
				E('button', { 'class': 'btn', 'click': ui.hideModal }, [ _('Cancel') ]),
				' ',
				E('button', {
					'class': 'btn cbi-button cbi-button-negative',
					'click': ui.createHandlerFn(this, function() {
						ui.hideModal();
						return this.handleControl('stop');
					})
				}, [ _('Stop') ])
			])
		]);
	},

	button: function(label, action, style) {
		return E('button', {
			'class': 'btn cbi-button ' + style,
			'data-action': action,
			'click': (action == 'stop') ? ui.createHandlerFn(this, 'handleStop')
				: ui.createHandlerFn(this, 'handleControl', action)
		}, [ label ]);
	},

	renderPage: function(reply) {
		if (reply.failed != null)
			return [
				E('div', { 'class': 'alert-message warning', 'data-state': 'failed' }, [
					E('strong', {}, [ _('The loxgw status could not be read.') ]), ' ', reply.reason
				])
			];
		const status = reply.status;
		const nodes = [ this.renderService(reply) ];
		const problems = this.problems(reply);
		if (problems.length)
			nodes.push(this.renderProblems(problems));
		if (status) {
			nodes.push(this.renderDevices(status, reply.age || 0));
			nodes.push(this.renderDetails(status, reply));
		}
		return nodes;
	},

	renderService: function(reply) {
		const status = reply.status;
		const line = [];
		let style = 'notice';
		const buttons = [];
		switch (reply.state) {
		case 'running':
			line.push(_('loxgw %s is running, up %s.').format(status.version || '?', duration(status.uptime)));
			line.push(' ', _('Firewall: %s; DNS: %s.').format(
				status.firewall == 'fw4' ? _('with fw4') : _('standalone'),
				status.dns_mode == 'off' ? _('off') : '%s (%s)'.format(status.dns_mode, status.dns_path || '-')));
			buttons.push(this.button(_('Restart'), 'restart', 'cbi-button-apply'), ' ',
				this.button(_('Stop'), 'stop', 'cbi-button-negative'));
			style = 'success';
			break;
		case 'stale':
			line.push(_('loxgw runs, but has not updated its status for %s: it may hang. Restart it; if that recurs, its log (logread -e loxgw) tells why.').format(duration(reply.age)));
			buttons.push(this.button(_('Restart'), 'restart', 'cbi-button-apply'));
			style = 'warning';
			break;
		case 'starting':
			line.push(_('loxgw is starting: there is no status yet at %s.').format(reply.file));
			style = 'notice';
			break;
		case 'unreadable':
			line.push(_('loxgw runs, but its status cannot be read: %s').format(reply.detail || _('unknown reason')));
			buttons.push(this.button(_('Restart'), 'restart', 'cbi-button-apply'));
			style = 'warning';
			break;
		case 'crashed':
			line.push(_('loxgw stopped unexpectedly (exit code %s) and procd gave up restarting it.').format(
				reply.service.exit_code != null ? reply.service.exit_code : '?'));
			buttons.push(this.button(_('Start'), 'start', 'cbi-button-apply'));
			style = 'error';
			break;
		case 'disabled':
			line.push(_('loxgw is switched off in its settings (Enabled is off), so it does not run.'));
			buttons.push(E('a', { 'class': 'btn cbi-button', 'href': L.url('admin/services/loxgw/settings') }, [ _('Settings') ]));
			break;
		default:
			line.push(_('loxgw is not running.'));
			buttons.push(this.button(_('Start'), 'start', 'cbi-button-apply'));
			style = 'warning';
		}
		const section = [
			E('div', { 'class': 'alert-message ' + style, 'data-state': reply.state }, kids(line)),
			E('div', { 'class': 'cbi-section-actions', 'style': 'margin-bottom:1em' }, buttons)
		];
		if (this.check && (reply.state == 'stopped' || reply.state == 'crashed'))
			section.push(this.renderCheck(this.check));
		return E('div', { 'class': 'cbi-section' }, section);
	},

	renderCheck: function(check) {
		if (check.failed != null)
			return E('p', {}, [ _('The configuration could not be checked: %s').format(check.reason) ]);
		if (check.valid)
			return E('p', {}, [ _('Its configuration is valid (loxgw check).') ]);
		return E('div', { 'class': 'alert-message error', 'data-check': 'invalid' }, [
			E('p', {}, [ _('It cannot start: its configuration has errors (loxgw check):') ]),
			E('ul', {}, check.messages.map(function(m) {
				return E('li', {}, kids([ m.path ? '%s:%d: '.format(m.path, m.line) : null, m.message ]));
			})),
			check.messages_total > check.messages.length
				? E('p', {}, [ _('and %d more').format(check.messages_total - check.messages.length) ]) : E([])
		]);
	},

	// Problems in words, most serious first: [ level, text ].
	problems: function(reply) {
		const out = [];
		const status = reply.status;
		if (!status)
			return out;
		if (status.last_error)
			out.push([ 'error', _('loxgw reports: %s').format(status.last_error) ]);
		if (reply.fw4_include === false)
			out.push([ 'error', _('fw4 has not loaded loxgw\'s rules, so the zone policies block what loxgw allows. Restart loxgw (it reloads fw4), or run "fw4 reload".') ]);
		if (status.enabled && !status.installed)
			out.push([ 'error', _('loxgw has not installed its firewall table.') ]);
		if (status.dns_mode == 'off')
			out.push([ 'warning', _('DNS handling is off: devices cannot reach the Loxone cloud.') ]);
		if (!status.zones.some(function(z) { return z.role == 'devices'; }))
			out.push([ 'warning', _('No zone has the role "devices": loxgw does not know where the Loxone devices are. Add one in the settings.') ]);
		if (!status.zones.some(function(z) { return z.role == 'clients'; }))
			out.push([ 'warning', _('No zone has the role "clients": the Loxone App cannot reach the devices from another network.') ]);
		status.upnp.forEach(function(m) {
			const reason = m.conflict ? _('port %d upstream belongs to %s').format(m.external_port, m.conflict)
				: (m.last_error || _('no reason given'));
			const failures = N_(m.failures, '%d failure', '%d failures').format(m.failures);
			if (m.state == 'failed')
				out.push([ 'error', _('UPnP mapping "%s" failed: %s (%s so far); next try in %s.').format(
					m.name, reason, failures, duration(m.next_in)) ]);
			else if (m.failures > 0 && (m.state == 'requested' || m.state == 'absent'))
				out.push([ 'error', _('UPnP mapping "%s" is being requested again after failing: %s (%s so far).').format(
					m.name, reason, failures) ]);
		});
		status.failures.forEach(function(f) {
			out.push([ 'warning', _('%s (%d times)').format(f.text, f.count) ]);
		});
		if (status.devices_refused_cap)
			out.push([ 'warning', _('%d devices were not taken in: the device list is full.').format(status.devices_refused_cap) ]);
		status.devices.forEach(function(d) {
			if (!d.present)
				out.push([ 'warning', _('%s went away %s ago; its firewall openings stay for the grace period.').format(
					deviceRef(d), duration(d.last_seen)) ]);
			else if (!d.product_known)
				out.push([ 'notice', _('%s is a Loxone device of unknown product: only HTTP and HTTPS are open to it.').format(
					deviceRef(d)) ]);
		});
		if (reply.state == 'running' && status.device_counts.total == 0)
			out.push([ 'notice', _('No Loxone device found yet. loxgw finds devices by their MAC address, LoxLIVE and SSDP answers, or a device in the settings.') ]);
		return out;
	},

	renderProblems: function(problems) {
		const key = 'problems';
		const shown = this.expanded[key] ? problems : problems.slice(0, PROBLEMS_SHOWN);
		const nodes = shown.map(function(p) {
			return E('div', { 'class': 'alert-message ' + (p[0] == 'error' ? 'error' : p[0]), 'data-problem': p[0] }, [ p[1] ]);
		});
		if (problems.length > shown.length)
			nodes.push(this.moreButton(key, problems.length));
		return E('div', { 'class': 'cbi-section', 'id': 'loxgw-problems' }, [
			E('h3', {}, [ _('Problems (%d)').format(problems.length) ])
		].concat(nodes));
	},

	moreButton: function(key, total) {
		return E('button', {
			'class': 'btn cbi-button',
			'click': L.bind(function() {
				this.expanded[key] = true;
				this.rerender();
			}, this)
		}, [ _('Show all %d').format(total) ]);
	},

	zoneOf: function(status, name) {
		return status.zones.filter(function(z) { return z.name == name; })[0] || null;
	},

	dnsGroup: function(ip) {
		const dns = this.dns && this.dns.reply;
		if (!dns || dns.failed != null || !Array.isArray(dns.devices))
			return null;
		return dns.devices.filter(function(g) { return g.device == ip; })[0] || null;
	},

	cloudCell: function(status, device) {
		if (status.dns_mode == 'off')
			return _('off (DNS handling is off)');
		const zone = this.zoneOf(status, device.zone);
		const cloudZones = status.zones.filter(function(z) { return z.role == 'devices' && z.cloud; });
		if (zone ? !zone.cloud : !cloudZones.length)
			return zone ? _('blocked: zone %s has cloud access off').format(zone.name) : _('blocked: no devices zone has cloud access');
		if (!device.dns_entry_count)
			return _('allowed; nothing looked up yet');
		const functions = functionsOf(this.dnsGroup(device.ip));
		const count = _('%d allowances').format(device.dns_entry_count);
		return functions.length ? [ functions.join(', '), E('br'), E('small', {}, [ count ]) ] : count;
	},

	appCell: function(status, device) {
		if (!device.present)
			return _('gone; openings kept for the grace period');
		if (!status.zones.some(function(z) { return z.role == 'clients'; }))
			return _('no clients zone');
		if (!device.pinhole_count)
			return _('not reachable: no openings');
		return _('reachable (%d openings)').format(device.pinhole_count);
	},

	discoveryCell: function(status, device) {
		const relayed = status.relay.interfaces;
		if (!relayed.length)
			return _('not relayed (no relay runs)');
		const zone = this.zoneOf(status, device.zone);
		if (!zone)
			return _('relay runs on %s').format(relayed.join(', '));
		const mine = zone.interfaces.filter(function(i) { return relayed.indexOf(i) >= 0; });
		if (!mine.length && zone.interfaces.length)
			return _('not relayed from zone %s').format(zone.name);
		const others = relayed.filter(function(i) { return zone.interfaces.indexOf(i) < 0; });
		return others.length ? _('relayed to %s').format(others.join(', ')) : _('relayed');
	},

	renderDevices: function(status, age) {
		const key = 'devices';
		const devices = this.expanded[key] ? status.devices : status.devices.slice(0, ROWS_SHOWN);
		const columns = [ _('Device'), _('Address'), _('VLAN'), _('Cloud'), _('Loxone App'), _('Discovery'), _('Last seen') ];
		const rows = devices.map(L.bind(function(d) {
			return [
				[ E('strong', {}, [ deviceLabel(d) ]), E('br'), E('small', {}, kids([ productWords(d), d.firmware ? ' ' + d.firmware : null ])) ],
				[ d.ip || '-', E('br'), E('small', {}, [ d.mac || '' ]) ],
				d.zone ? (d.network && d.network != d.zone ? '%s (%s)'.format(d.zone, d.network) : d.zone) : (d.network || '-'),
				this.cloudCell(status, d),
				this.appCell(status, d),
				this.discoveryCell(status, d),
				d.present ? _('%s ago').format(duration(d.last_seen + age)) : _('gone %s ago').format(duration(d.last_seen + age))
			];
		}, this));
		const counts = status.device_counts;
		const nodes = [
			E('h3', {}, [ _('Loxone devices (%d)').format(counts.total) ]),
			table(columns, rows, _('No Loxone device found yet.'))
		];
		if (status.devices.length > devices.length)
			nodes.push(this.moreButton(key, status.devices.length));
		if (counts.total > status.devices.length)
			nodes.push(E('p', {}, [ _('%d more devices are not listed here.').format(counts.total - status.devices.length) ]));
		return E('div', { 'class': 'cbi-section', 'id': 'loxgw-devices' }, nodes);
	},

	details: function(key, title, count, body) {
		const node = E('details', { 'class': 'cbi-section', 'data-details': key }, [
			E('summary', {}, [ E('strong', {}, [ '%s (%s)'.format(title, count) ]) ])
		].concat(body));
		if (this.open[key])
			node.setAttribute('open', '');
		node.addEventListener('toggle', L.bind(function() {
			this.open[key] = node.open;
			if (key == 'dns' && node.open && !this.dnsLoading &&
			    (!this.dns || Date.now() / 1000 - this.dns.fetched >= DNS_REFRESH_SECONDS))
				this.loadDns();
		}, this));
		return node;
	},

	renderDetails: function(status, reply) {
		return E('div', { 'id': 'loxgw-details' }, [
			this.details('dns', _('DNS allowances'), status.dns_entries_total, this.renderDns(status)),
			this.details('relay', _('Discovery relay'), status.relay.interfaces.length, this.renderRelay(status)),
			this.details('upnp', _('UPnP mappings'), status.upnp.length, this.renderUpnp(status)),
			this.details('zones', _('Zones'), status.zones.length, this.renderZones(status)),
			this.details('daemon', _('Daemon'), status.version || '?', this.renderDaemon(status, reply)),
			this.details('counters', _('Counters'), Object.keys(status.counters).length, this.renderCounters(status))
		]);
	},

	renderDns: function(status) {
		const dns = this.dns && this.dns.reply;
		if (!dns)
			return [ E('p', {}, [ E('em', {}, [ _('Loading…') ]) ]) ];
		if (dns.failed != null || dns.error)
			return [ E('p', {}, [ _('The DNS allowances could not be read: %s').format(dns.reason || dns.error) ]) ];
		const elapsed = Date.now() / 1000 - this.dns.fetched;
		const names = {};
		status.devices.forEach(function(d) { if (d.ip) names[d.ip] = deviceLabel(d); });
		const rows = [];
		const key = 'dns';
		let shown = 0;
		dns.devices.forEach(function(group) {
			if (!this.expanded[key] && shown >= ROWS_SHOWN)
				return;
			rows.push({ group: [ names[group.device] ? '%s (%s)'.format(names[group.device], group.device) : group.device,
				' — ', _('%d names, %d allowances').format(group.names_total, group.entries) ] });
			group.names.forEach(function(n) {
				if (!this.expanded[key] && shown >= ROWS_SHOWN)
					return;
				shown++;
				rows.push([
					n.name,
					n.rules.map(function(r) { return '%s %s'.format(r.proto, r.ports || ''); }).join(', '),
					n.rules.map(function(r) {
						return r.addresses.join(', ') + (r.addresses_total > r.addresses.length
							? ' ' + _('and %d more').format(r.addresses_total - r.addresses.length) : '');
					}).join('; '),
					duration(Math.max.apply(null, n.rules.map(function(r) { return r.expires_in || 0; })) - elapsed)
				]);
			}, this);
		}, this);
		const nodes = [
			E('p', {}, [ _('Cloud addresses each device may reach, opened by the DNS answers it asked for, as of %s ago.').format(duration(elapsed)), ' ',
				E('button', { 'class': 'btn cbi-button', 'click': ui.createHandlerFn(this, 'loadDns') }, [ _('Refresh') ]) ]),
			table([ _('Name'), _('Ports'), _('Addresses'), _('Expires in') ], rows, _('No DNS allowances.'))
		];
		const total = dns.devices.reduce(function(n, g) { return n + g.names.length; }, 0);
		if (!this.expanded[key] && total > shown)
			nodes.push(this.moreButton(key, total));
		if (dns.devices_total > dns.devices.length)
			nodes.push(E('p', {}, [ _('%d more devices are not listed here.').format(dns.devices_total - dns.devices.length) ]));
		return nodes;
	},

	renderRelay: function(status) {
		const relay = status.relay;
		const rows = Object.keys(relay.by_interface).sort().map(function(name) {
			const c = relay.by_interface[name];
			const dropped = Object.keys(c).filter(function(k) { return k.indexOf('dropped_') == 0 && c[k]; }).map(function(k) {
				return '%d %s'.format(c[k], words(k, RELAY_COUNTERS));
			});
			const other = Object.keys(c).filter(function(k) {
				return k.indexOf('dropped_') != 0 && k != 'received' && k != 'relayed' && c[k];
			}).map(function(k) {
				return '%d %s'.format(c[k], words(k, RELAY_COUNTERS));
			});
			return [ name, String(c.received || 0), String(c.relayed || 0), dropped.join(', ') || '-', other.join(', ') || '-' ];
		});
		const relays = status.relays.map(function(r) {
			return '%s: %s'.format(r.name, r.enabled ? (r.zones.concat(r.interfaces).join(', ') || _('no interfaces')) : _('off'));
		});
		return [
			E('p', {}, [ relay.interfaces.length
				? _('Loxone discovery broadcasts (UDP 7070-7079) are relayed between %s.').format(relay.interfaces.join(', '))
				: _('No relay runs: the Loxone App and Config find devices in other networks only by their address.') ]),
			relays.length ? E('p', {}, [ _('Configured relays: %s').format(relays.join('; ')) ]) : E([]),
			table([ _('Interface'), _('Received'), _('Relayed'), _('Not relayed'), _('Other') ], rows, _('No broadcasts yet.'))
		];
	},

	renderUpnp: function(status) {
		const rows = status.upnp.map(function(m) {
			const live = (m.state == 'active' || m.state == 'renewing');
			return [
				m.name,
				words(m.state, UPNP_STATES),
				live && m.external_ip ? '%s:%d/%s'.format(m.external_ip, m.external_port, m.proto) : (m.external_port ? _('port %d/%s').format(m.external_port, m.proto) : '-'),
				m.device ? '%s:%d'.format(m.device, m.internal_port) : '-',
				m.conflict ? _('held by %s').format(m.conflict) : (m.last_error || '-'),
				m.next_in != null ? _('in %s').format(duration(m.next_in)) : '-'
			];
		});
		return [ table([ _('Mapping'), _('State'), _('Upstream'), _('Device'), _('Last error'), _('Next check') ], rows, _('No UPnP mapping is configured.')) ];
	},

	renderZones: function(status) {
		const rows = status.zones.map(function(z) {
			return [ z.name, z.role == 'devices' ? _('Loxone devices') : _('clients (App, Config)'),
				z.interfaces.join(', ') || '-', z.networks.join(', ') || '-', z.cloud ? _('allowed') : _('blocked') ];
		});
		return [ table([ _('Zone'), _('Role'), _('Interfaces'), _('Networks'), _('Cloud') ], rows, _('No zone is configured.')) ];
	},

	renderDaemon: function(status, reply) {
		const rows = [
			[ _('Version'), status.version || '-' ],
			[ _('Process'), String(status.pid || '-') ],
			[ _('Running for'), duration(status.uptime) ],
			[ _('Firewall'), status.firewall == 'fw4' ? _('fw4, table inet %s').format(status.table) : _('standalone, table inet %s').format(status.table) ],
			[ _('DNS'), '%s, %s, %s'.format(status.dns_mode, status.dns_path || '-', status.queue_mode || '-') ],
			[ _('Allowances refreshed by'), status.set_refresh || '-' ],
			[ _('Firewall updates'), String(status.ruleset_applies) ],
			[ _('Status written'), _('%s ago').format(duration(reply.age)) ]
		];
		return [ table([ _('Property'), _('Value') ], rows, '-') ];
	},

	renderCounters: function(status) {
		const rows = Object.keys(status.counters).sort().map(function(k) {
			return [ words(k, COUNTERS), String(status.counters[k]) ];
		}).concat(Object.keys(status.relay.other).sort().map(function(k) {
			return [ words(k, COUNTERS), String(status.relay.other[k]) ];
		}));
		return [ table([ _('Counter'), _('Value') ], rows, _('No counters.')) ];
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
