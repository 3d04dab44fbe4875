'use strict';
'require rpc';
'require baseclass';

/*
 * LuCI.uci as documented: a local cache of UCI packages loaded with ubus `uci get`,
 * staged changes (creates, changes, deletes) that save() sends with `uci add`,
 * `uci set` and `uci delete`, and apply() with `uci apply`.
 */

return baseclass.extend({
	__init__() {
		this.state = { newidx: 0, values: {}, creates: {}, changes: {}, deletes: {} };
		this.loaded = {};
	},

	callLoad: rpc.declare({ object: 'uci', method: 'get', params: [ 'config' ], expect: { values: {} } }),
	callAdd: rpc.declare({ object: 'uci', method: 'add', params: [ 'config', 'type', 'name', 'values' ], expect: { section: '' } }),
	callSet: rpc.declare({ object: 'uci', method: 'set', params: [ 'config', 'section', 'values' ] }),
	callDelete: rpc.declare({ object: 'uci', method: 'delete', params: [ 'config', 'section', 'options' ] }),
	callApply: rpc.declare({ object: 'uci', method: 'apply', params: [ 'timeout', 'rollback' ] }),
	callConfirm: rpc.declare({ object: 'uci', method: 'confirm' }),

	createSID(conf) {
		let sid;
		do {
			sid = 'new%06x'.format(Math.random() * 0xFFFFFF);
		} while ((this.state.creates[conf] || {})[sid] || (this.state.values[conf] || {})[sid]);
		return sid;
	},

	resolveSID(conf, sid) {
		if (typeof(sid) != 'string')
			return sid;
		const m = /^@([a-zA-Z0-9_-]+)\[(-?[0-9]+)\]$/.exec(sid);
		if (m) {
			const sections = this.sections(conf, m[1]);
			const pos = +m[2];
			const section = sections[pos >= 0 ? pos : sections.length + pos];
			return section ? section['.name'] : null;
		}
		return sid;
	},

	load(packages) {
		const self = this, pkgs = [], tasks = [];
		if (!Array.isArray(packages))
			packages = [ packages ];
		packages.forEach(function(p) {
			if (!self.state.values[p]) {
				pkgs.push(p);
				self.loaded[p] = self.loaded[p] || self.callLoad(p);
				tasks.push(self.loaded[p]);
			}
		});
		return Promise.all(tasks).then(function(responses) {
			responses.forEach(function(values, i) { self.state.values[pkgs[i]] = values; });
			return pkgs;
		});
	},

	unload(packages) {
		if (!Array.isArray(packages))
			packages = [ packages ];
		packages.forEach(function(p) {
			delete this.state.values[p];
			delete this.state.creates[p];
			delete this.state.changes[p];
			delete this.state.deletes[p];
			delete this.loaded[p];
		}, this);
	},

	add(conf, type, name) {
		const n = this.state.creates;
		const sid = name || this.createSID(conf);
		n[conf] = n[conf] || {};
		n[conf][sid] = { '.type': type, '.name': sid, '.create': name, '.anonymous': !name, '.index': 1000 + this.state.newidx++ };
		return sid;
	},

	remove(conf, sid) {
		const n = this.state.creates, c = this.state.changes, d = this.state.deletes;
		if (n[conf] && n[conf][sid]) {
			delete n[conf][sid];
		}
		else {
			if (c[conf])
				delete c[conf][sid];
			d[conf] = d[conf] || {};
			d[conf][sid] = true;
		}
	},

	sections(conf, type, cb) {
		const v = this.state.values[conf], n = this.state.creates[conf];
		const c = this.state.changes[conf], d = this.state.deletes[conf];
		const list = [];
		if (!v)
			return list;
		for (const s in v)
			if ((!d || d[s] !== true) && (!type || v[s]['.type'] == type))
				list.push(Object.assign({}, v[s], c ? c[s] : undefined));
		if (n)
			for (const s in n)
				if (!type || n[s]['.type'] == type)
					list.push(Object.assign({}, n[s]));
		list.sort(function(a, b) { return a['.index'] - b['.index']; });
		list.forEach(function(s, i) { s['.index'] = i; });
		if (typeof(cb) == 'function')
			list.forEach(function(s) { cb.call(this, s, s['.name']); }, this);
		return list;
	},

	get(conf, sid, opt) {
		const v = this.state.values, n = this.state.creates, c = this.state.changes, d = this.state.deletes;
		sid = this.resolveSID(conf, sid);
		if (sid == null)
			return null;
		if (n[conf] && n[conf][sid])
			return (opt == null) ? n[conf][sid] : n[conf][sid][opt];
		if (opt != null) {
			if (d[conf] && d[conf][sid]) {
				if (d[conf][sid] === true || d[conf][sid].indexOf(opt) >= 0)
					return undefined;
			}
			if (c[conf] && c[conf][sid] && c[conf][sid][opt] != null)
				return c[conf][sid][opt];
			return (v[conf] && v[conf][sid]) ? v[conf][sid][opt] : undefined;
		}
		return v[conf] ? v[conf][sid] : undefined;
	},

	set(conf, sid, opt, val) {
		const v = this.state.values, n = this.state.creates, c = this.state.changes, d = this.state.deletes;
		sid = this.resolveSID(conf, sid);
		if (sid == null || opt == null || opt.charAt(0) == '.')
			return;
		if (n[conf] && n[conf][sid]) {
			if (val != null)
				n[conf][sid][opt] = val;
			else
				delete n[conf][sid][opt];
		}
		else if (val != null && val !== '') {
			if (d[conf] && d[conf][sid] === true)
				return;
			if (!v[conf] || !v[conf][sid])
				return;
			c[conf] = c[conf] || {};
			c[conf][sid] = c[conf][sid] || {};
			if (d[conf] && d[conf][sid]) {
				d[conf][sid] = d[conf][sid].filter(function(o) { return o !== opt; });
				if (!d[conf][sid].length)
					delete d[conf][sid];
			}
			c[conf][sid][opt] = val;
		}
		else {
			if (!(v[conf] && v[conf][sid] && v[conf][sid].hasOwnProperty(opt)) &&
			    !(c[conf] && c[conf][sid] && c[conf][sid].hasOwnProperty(opt)))
				return;
			d[conf] = d[conf] || {};
			d[conf][sid] = d[conf][sid] || [];
			if (d[conf][sid] !== true)
				d[conf][sid].push(opt);
		}
	},

	unset(conf, sid, opt) {
		return this.set(conf, sid, opt, null);
	},

	get_first(conf, type, opt) {
		const s = this.sections(conf, type)[0];
		return s ? this.get(conf, s['.name'], opt) : null;
	},

	changes() {
		let n = 0;
		[ this.state.creates, this.state.changes, this.state.deletes ].forEach(function(m) {
			for (const conf in m)
				n += Object.keys(m[conf]).length;
		});
		return n;
	},

	save() {
		const v = this.state.values, n = this.state.creates, c = this.state.changes, d = this.state.deletes;
		const self = this, tasks = [], pkgs = {};
		for (const conf in n) {
			for (const sid in n[conf]) {
				const values = {};
				for (const k in n[conf][sid])
					if (k.charAt(0) != '.')
						values[k] = n[conf][sid][k];
				tasks.push(self.callAdd(conf, n[conf][sid]['.type'], n[conf][sid]['.create'], values));
			}
			pkgs[conf] = true;
		}
		for (const conf in c) {
			for (const sid in c[conf])
				tasks.push(self.callSet(conf, sid, c[conf][sid]));
			pkgs[conf] = true;
		}
		for (const conf in d) {
			for (const sid in d[conf])
				tasks.push(self.callDelete(conf, sid, d[conf][sid] === true ? null : d[conf][sid]));
			pkgs[conf] = true;
		}
		return Promise.all(tasks).then(function() {
			const names = Object.keys(pkgs);
			self.unload(names);
			return self.load(names);
		});
	},

	apply(timeout) {
		const self = this;
		return self.callApply(timeout || 10, true).then(function(rv) {
			return (rv === 0) ? self.callConfirm() : Promise.reject(rv);
		});
	}
});
