'use strict';
'require ui';
'require uci';
'require dom';
'require baseclass';

/*
 * LuCI.form as documented (https://openwrt.github.io/luci/jsapi/LuCI.form.html), for
 * the classes the loxgw settings page uses: Map, NamedSection, TypedSection,
 * TableSection, GridSection (rows with an Edit dialog), Value, ListValue, Flag,
 * DynamicList, MultiValue, DummyValue, HiddenValue. Kept as LuCI documents them:
 *   - options load their value from uci, render a widget whose node id is
 *     "cbid.<config>.<section>.<option>", and parse() writes the form value back
 *     (rmempty/optional remove an empty value; an invalid field rejects the save);
 *   - depends() hides options whose dependencies are unmet;
 *   - table cells carry data-title (the option title) for the mobile layout;
 *   - a grid's non-editable cells show textvalue(): the raw value HTML-escaped with '%h'
 *     (a ListValue's too, not its choice's label; Flag shows Yes/No);
 *   - Map.save() with an invalid field rejects, shows LuCI's "Save error" dialog naming the
 *     option and its validation error, and keeps what the user typed (no re-render); a
 *     grid's Edit dialog saves silently and stays open.
 */

const CBINode = baseclass.extend({
	__init__(title, description) {
		this.title = title || '';
		this.description = description || '';
		this.children = [];
	},

	append(obj) {
		this.children.push(obj);
	},

	parse(...args) {
		this.children.forEach(function(child) { child.parse(...args); });
	},

	render() {
		L.error('InternalError', 'Not implemented');
	},

	loadChildren(...args) {
		const tasks = [];
		this.children.forEach(function(child) {
			if (!child.disable)
				tasks.push(child.load(...args));
		});
		return Promise.all(tasks);
	},

	renderChildren(tab_name, ...args) {
		const tasks = [];
		let index = 0;
		this.children.forEach(function(child) {
			if ((tab_name === null || child.tab === tab_name) && !child.disable)
				tasks.push(child.render(index++, ...args));
		});
		return Promise.all(tasks);
	},

	stripTags(s) {
		if (typeof(s) == 'string' && !s.match(/[<>]/))
			return s;
		const x = E('div', {}, s);
		return x.textContent || '';
	},

	titleFn(attr, ...args) {
		let s = null;
		if (typeof(this[attr]) == 'function')
			s = this[attr].apply(this, args);
		else if (typeof(this[attr]) == 'string')
			s = args.length ? this[attr].format(...args) : this[attr];
		if (s != null)
			s = this.stripTags(String(s)).trim();
		return (s == null || s == '') ? null : s;
	}
});

const isEqual = function(x, y) {
	if (x != null && y != null && typeof(x) != typeof(y))
		return false;
	if ((x == null) != (y == null))
		return false;
	if (Array.isArray(x)) {
		if (!Array.isArray(y) || x.length != y.length)
			return false;
		for (let i = 0; i < x.length; i++)
			if (!isEqual(x[i], y[i]))
				return false;
		return true;
	}
	if (x != null && typeof(x) == 'object') {
		const kx = Object.keys(x), ky = Object.keys(y);
		return kx.length == ky.length && kx.every(function(k) { return isEqual(x[k], y[k]); });
	}
	return x == y;
};

const CBIMap = CBINode.extend({
	__init__(config, ...args) {
		this.super('__init__', args);
		this.config = config;
		this.parsechain = [ config ];
		this.data = uci;
	},

	findElements(...args) {
		let q;
		if (args.length == 1)
			q = args[0];
		else if (args.length == 2)
			q = '[%s="%s"]'.format(args[0], args[1]);
		else
			L.error('InternalError', 'Expecting one or two arguments to findElements()');
		return this.root.querySelectorAll(q);
	},

	findElement(...args) {
		const res = this.findElements(...args);
		return res.length ? res[0] : null;
	},

	chain(config) {
		if (this.parsechain.indexOf(config) == -1)
			this.parsechain.push(config);
	},

	section(cbiClass, ...args) {
		if (!CBIAbstractSection.isSubclass(cbiClass))
			L.error('TypeError', 'Class must be a descendent of CBIAbstractSection');
		const obj = cbiClass.instantiate([ this ].concat(args));
		this.append(obj);
		return obj;
	},

	load() {
		return this.data.load(this.parsechain).then(this.loadChildren.bind(this));
	},

	parse() {
		return Promise.all(this.children.map(function(child) { return child.parse(); }));
	},

	save(cb, silent) {
		this.checkDepends();
		return this.parse()
			.then(cb)
			.then(this.data.save.bind(this.data))
			.then(this.load.bind(this))
			.catch(function(e) {
				if (!silent) {
					ui.showModal(_('Save error'), [
						E('p', {}, [ _('An error occurred while saving the form:') ]),
						E('p', {}, [ E('em', { 'style': 'white-space:pre-wrap' }, [ e.message ]) ]),
						E('div', { 'class': 'right' }, [
							E('button', { 'class': 'cbi-button', 'click': ui.hideModal }, [ _('Dismiss') ])
						])
					]);
				}
				return Promise.reject(e);
			}).then(this.renderContents.bind(this));
	},

	reset() {
		return this.renderContents();
	},

	render() {
		return this.load().then(this.renderContents.bind(this));
	},

	renderContents() {
		const mapEl = this.root || (this.root = E('div', {
			'id': 'cbi-%s'.format(this.config),
			'class': 'cbi-map',
			'cbi-dependency-check': L.bind(this.checkDepends, this)
		}));
		dom.bindClassInstance(mapEl, this);
		return this.renderChildren(null).then(L.bind(function(nodes) {
			dom.content(mapEl, null);
			if (this.title != null && this.title != '')
				mapEl.appendChild(E('h2', { 'name': 'content' }, this.title));
			if (this.description != null && this.description != '')
				mapEl.appendChild(E('div', { 'class': 'cbi-map-descr' }, this.description));
			dom.append(mapEl, nodes);
			this.checkDepends();
			return mapEl;
		}, this));
	},

	lookupOption(name, section_id, config_name) {
		const id = (name.indexOf('.') > -1) ? 'cbid.%s'.format(name)
			: 'cbid.%s.%s.%s'.format(config_name || this.config, section_id, name);
		const elem = this.findElement('data-field', id);
		const inst = elem ? dom.findClassInstance(elem) : null;
		return (inst instanceof CBIAbstractValue) ? [ inst, id.split(/\./)[2] ] : null;
	},

	checkDepends(ev, n) {
		let changed = false;
		this.children.forEach(function(s) {
			if (s.checkDepends(ev, n))
				changed = true;
		});
		if (changed && (n || 0) < 10)
			this.checkDepends(ev, (n || 10) + 1);
	},

	isDependencySatisfied(depends, config_name, section_id) {
		let def = false;
		if (!Array.isArray(depends) || !depends.length)
			return true;
		for (let i = 0; i < depends.length; i++) {
			let istat = true, reverse = false;
			for (const dep in depends[i]) {
				if (dep == '!reverse') {
					reverse = true;
				}
				else if (dep == '!default') {
					def = true;
					istat = false;
				}
				else {
					const res = this.lookupOption(dep, section_id, config_name);
					const val = (res && res[0].isActive(res[1])) ? res[0].formvalue(res[1]) : null;
					istat = istat && isEqual(val, depends[i][dep]);
				}
			}
			if (istat ^ reverse)
				return true;
		}
		return def;
	}
});

const CBIAbstractSection = CBINode.extend({
	__init__(map, sectionType, ...args) {
		this.super('__init__', args);
		this.sectiontype = sectionType;
		this.map = map;
		this.config = map.config;
		this.optional = true;
		this.addremove = false;
		this.dynamic = false;
	},

	cfgsections() {
		L.error('InternalError', 'Not implemented');
	},

	filter(section_id) {
		return true;
	},

	load() {
		const tasks = [];
		this.cfgsections().forEach(function(section_id) {
			tasks.push(this.loadChildren(section_id).then(L.bind(function(values) {
				values.forEach(function(value, i) { this.children[i].cfgvalue(section_id, value); }, this);
			}, this)));
		}, this);
		return Promise.all(tasks);
	},

	parse() {
		const tasks = [];
		this.cfgsections().forEach(function(section_id) {
			this.children.forEach(function(child) { tasks.push(child.parse(section_id)); });
		}, this);
		return Promise.all(tasks);
	},

	tab(name, title, description) {
		if (this.tabs && this.tabs[name])
			throw 'Tab already declared';
		const entry = { name: name, title: title, description: description, children: [] };
		this.tabs = this.tabs || [];
		this.tabs.push(entry);
		this.tabs[name] = entry;
		this.tab_names = this.tab_names || [];
		this.tab_names.push(name);
	},

	option(cbiClass, ...args) {
		if (!CBIAbstractValue.isSubclass(cbiClass))
			throw L.error('TypeError', 'Class must be a descendent of CBIAbstractValue');
		const obj = cbiClass.instantiate([ this.map, this ].concat(args));
		this.append(obj);
		return obj;
	},

	taboption(tabName, ...args) {
		if (!this.tabs || !this.tabs[tabName])
			throw L.error('ReferenceError', 'Associated tab not declared');
		const obj = this.option(...args);
		obj.tab = tabName;
		this.tabs[tabName].children.push(obj);
		return obj;
	},

	renderUCISection(section_id) {
		if (!this.tabs)
			return this.renderOptions(null, section_id);
		return Promise.all(this.tab_names.map(function(tab) {
			return this.renderOptions(tab, section_id);
		}, this)).then(L.bind(function(nodes) {
			const containers = E([]);
			nodes.forEach(function(node, i) {
				const tab = this.tabs[this.tab_names[i]];
				containers.appendChild(E('div', { 'data-tab': tab.name, 'data-tab-title': tab.title }, [ node ]));
			}, this);
			return containers;
		}, this));
	},

	renderOptions(tab_name, section_id) {
		const in_table = (this instanceof CBITableSection);
		return this.renderChildren(tab_name, section_id, in_table).then(function(nodes) {
			const optionEls = E([]);
			nodes.forEach(function(node) { optionEls.appendChild(node); });
			return optionEls;
		});
	},

	checkDepends(ev, n) {
		let changed = false;
		this.cfgsections().forEach(function(sid) {
			this.children.forEach(function(o) {
				const isActive = o.isActive(sid), isSatisfied = o.checkDepends(sid);
				if (isActive != isSatisfied) {
					o.setActive(sid, !isActive);
					changed = true;
				}
				if (!n && isActive)
					o.triggerValidation(sid);
			});
		}, this);
		return changed;
	}
});

const CBIAbstractValue = CBINode.extend({
	__init__(map, section, option, ...args) {
		this.super('__init__', args);
		this.section = section;
		this.option = option;
		this.map = map;
		this.config = map.config;
		this.deps = [];
		this.initial = {};
		this.rmempty = true;
		this.default = null;
		this.size = null;
		this.optional = false;
	},

	depends(field, value) {
		let deps;
		if (typeof(field) === 'string')
			deps = {}, deps[field] = value;
		else
			deps = field;
		this.deps.push(deps);
	},

	transformDepList(section_id) {
		return this.deps.map(function(dep) {
			const out = {};
			for (const k in dep) {
				if (k.charAt(0) === '!')
					out[k] = dep[k];
				else if (k.indexOf('.') !== -1)
					out['cbid.%s'.format(k)] = dep[k];
				else
					out['cbid.%s.%s.%s'.format(this.uciconfig || this.section.uciconfig || this.map.config,
						this.ucisection || section_id, k)] = dep[k];
			}
			return out;
		}, this).filter(function(dep) { return Object.keys(dep).length; });
	},

	transformChoices() {
		if (!Array.isArray(this.keylist) || this.keylist.length == 0)
			return null;
		const choices = {};
		this.keylist.forEach(function(key, i) { choices[key] = this.vallist[i]; }, this);
		return choices;
	},

	checkDepends(section_id) {
		const config_name = this.uciconfig || this.section.uciconfig || this.map.config;
		return this.map.isDependencySatisfied(this.deps, config_name, section_id);
	},

	cbid(section_id) {
		if (section_id == null)
			L.error('TypeError', 'Section ID required');
		return 'cbid.%s.%s.%s'.format(this.uciconfig || this.section.uciconfig || this.map.config, section_id, this.option);
	},

	load(section_id) {
		if (section_id == null)
			L.error('TypeError', 'Section ID required');
		return this.map.data.get(this.uciconfig || this.section.uciconfig || this.map.config,
			this.ucisection || section_id, this.ucioption || this.option);
	},

	cfgvalue(section_id, set_value) {
		if (section_id == null)
			L.error('TypeError', 'Section ID required');
		if (arguments.length == 2) {
			this.data = this.data || {};
			this.data[section_id] = set_value;
		}
		return this.data ? this.data[section_id] : null;
	},

	formvalue(section_id) {
		const node = this.map.findElement('id', this.cbid(section_id));
		return node ? dom.callClassMethod(node, 'getValue') : null;
	},

	textvalue(section_id) {
		let cval = this.cfgvalue(section_id);
		if (cval == null)
			cval = this.default;
		if (Array.isArray(cval))
			cval = cval.join(' ');
		return (cval != null) ? '%h'.format(cval) : null;
	},

	validate(section_id, value) {
		return true;
	},

	isValid(section_id) {
		const node = this.map.findElement('id', this.cbid(section_id));
		return node ? dom.callClassMethod(node, 'isValid') : true;
	},

	getValidationError(section_id) {
		const node = this.map.findElement('id', this.cbid(section_id));
		return node ? dom.callClassMethod(node, 'getValidationError') : '';
	},

	invalidError(section_id) {
		const title = this.stripTags(this.title).trim();
		return new TypeError('%s %s'.format(_('Option "%s" contains an invalid input value.').format(title || this.option),
			this.getValidationError(section_id)));
	},

	isActive(section_id) {
		const field = this.map.findElement('data-field', this.cbid(section_id));
		return field != null && !field.classList.contains('hidden');
	},

	setActive(section_id, active) {
		const field = this.map.findElement('data-field', this.cbid(section_id));
		if (field && field.classList.contains('hidden') == active) {
			field.classList[active ? 'remove' : 'add']('hidden');
			return true;
		}
		return false;
	},

	triggerValidation(section_id) {
		const node = this.map.findElement('id', this.cbid(section_id));
		return node ? dom.callClassMethod(node, 'triggerValidation') : true;
	},

	parse(section_id) {
		const active = this.isActive(section_id);
		const cval = this.cfgvalue(section_id);
		const fval = active ? this.formvalue(section_id) : null;
		if (active && !this.isValid(section_id))
			return Promise.reject(this.invalidError(section_id));
		const empty = (fval == null || fval === '' || (Array.isArray(fval) && !fval.length));
		if (!empty) {
			if (this.forcewrite || !isEqual(cval, fval))
				return Promise.resolve(this.write(section_id, fval));
		}
		else if (this.rmempty || this.optional) {
			return Promise.resolve(this.remove(section_id));
		}
		else if (!isEqual(cval, fval)) {
			return Promise.reject(new TypeError(_('Option "%s" must not be empty.').format(this.stripTags(this.title).trim() || this.option)));
		}
		return Promise.resolve();
	},

	write(section_id, formvalue) {
		return this.map.data.set(this.uciconfig || this.section.uciconfig || this.map.config,
			this.ucisection || section_id, this.ucioption || this.option, formvalue);
	},

	remove(section_id) {
		return this.map.data.unset(this.uciconfig || this.section.uciconfig || this.map.config,
			this.ucisection || section_id, this.ucioption || this.option);
	}
});

const CBITypedSection = CBIAbstractSection.extend({
	__name__: 'CBI.TypedSection',

	cfgsections() {
		return this.map.data.sections(this.uciconfig || this.map.config, this.sectiontype)
			.map(function(s) { return s['.name']; })
			.filter(L.bind(this.filter, this));
	},

	handleAdd(ev, name) {
		this.map.data.add(this.uciconfig || this.map.config, this.sectiontype, name);
		return this.map.save(null, true);
	},

	handleRemove(section_id, ev) {
		this.map.data.remove(this.uciconfig || this.map.config, section_id);
		return this.map.save(null, true);
	},

	renderSectionAdd(extra_class) {
		if (!this.addremove)
			return E([]);
		const createEl = E('div', { 'class': 'cbi-section-create' });
		const btn_title = this.titleFn('addbtntitle');
		if (extra_class != null)
			createEl.classList.add(extra_class);
		if (this.anonymous) {
			createEl.appendChild(E('button', {
				'class': 'cbi-button cbi-button-add',
				'title': btn_title || _('Add'),
				'click': ui.createHandlerFn(this, 'handleAdd')
			}, [ btn_title || _('Add') ]));
		}
		else {
			const nameEl = E('input', { 'type': 'text', 'class': 'cbi-section-create-name' });
			dom.append(createEl, [
				E('div', {}, nameEl),
				E('button', {
					'class': 'cbi-button cbi-button-add',
					'title': btn_title || _('Add'),
					'click': ui.createHandlerFn(this, function(ev) {
						if (nameEl.classList.contains('cbi-input-invalid'))
							return;
						return this.handleAdd(ev, nameEl.value);
					})
				}, [ btn_title || _('Add') ])
			]);
			ui.addValidator(nameEl, 'uciname', true, null, 'blur', 'keyup');
		}
		return createEl;
	},

	renderSectionPlaceholder() {
		return E([ E('em', _('This section contains no values yet')), E('br'), E('br') ]);
	},

	renderContents(cfgsections, nodes) {
		const config_name = this.uciconfig || this.map.config;
		const sectionEl = E('div', { 'id': 'cbi-%s-%s'.format(config_name, this.sectiontype), 'class': 'cbi-section' });
		if (this.title != null && this.title != '')
			sectionEl.appendChild(E('h3', {}, this.title));
		if (this.description != null && this.description != '')
			sectionEl.appendChild(E('div', { 'class': 'cbi-section-descr' }, this.description));
		nodes.forEach(function(node, i) {
			if (this.addremove)
				sectionEl.appendChild(E('div', { 'class': 'cbi-section-remove right' }, E('button', {
					'class': 'cbi-button',
					'click': ui.createHandlerFn(this, 'handleRemove', cfgsections[i])
				}, [ _('Delete') ])));
			if (!this.anonymous)
				sectionEl.appendChild(E('h3', [ cfgsections[i].toUpperCase() ]));
			sectionEl.appendChild(E('div', {
				'id': 'cbi-%s-%s'.format(config_name, cfgsections[i]),
				'class': 'cbi-section-node',
				'data-section-id': cfgsections[i]
			}, node));
		}, this);
		if (nodes.length == 0)
			sectionEl.appendChild(this.renderSectionPlaceholder());
		sectionEl.appendChild(this.renderSectionAdd());
		dom.bindClassInstance(sectionEl, this);
		return sectionEl;
	},

	render() {
		const cfgsections = this.cfgsections();
		return Promise.all(cfgsections.map(this.renderUCISection, this)).then(this.renderContents.bind(this, cfgsections));
	}
});

const CBITableSection = CBITypedSection.extend({
	__name__: 'CBI.TableSection',

	tab() {
		throw 'Tabs are not supported by TableSection';
	},

	renderContents(cfgsections, nodes) {
		const config_name = this.uciconfig || this.map.config;
		const max_cols = isNaN(this.max_cols) ? this.children.length : this.max_cols;
		const sectionEl = E('div', { 'id': 'cbi-%s-%s'.format(config_name, this.sectiontype), 'class': 'cbi-section cbi-tblsection' });
		const tableEl = E('table', { 'class': 'table cbi-section-table' });
		if (this.title != null && this.title != '')
			sectionEl.appendChild(E('h3', {}, this.title));
		if (this.description != null && this.description != '')
			sectionEl.appendChild(E('div', { 'class': 'cbi-section-descr' }, this.description));
		tableEl.appendChild(this.renderHeaderRows(max_cols));
		nodes.forEach(function(node, i) {
			const sectionname = this.titleFn('sectiontitle', cfgsections[i]) || (!this.anonymous ? cfgsections[i] : null);
			const titled = sectionname && (!this.anonymous || this.sectiontitle);
			const trEl = E('tr', {
				'id': 'cbi-%s-%s'.format(config_name, cfgsections[i]),
				'class': 'tr cbi-section-table-row',
				'data-sid': cfgsections[i],
				'data-title': titled ? sectionname : null,
				'data-section-id': cfgsections[i]
			});
			// As LuCI does: a named row starts with its name, in a cell the theme shows as a
			// full-width heading on phones.
			if (titled)
				trEl.appendChild(E('td', { 'class': 'td cbi-value-field cbi-section-table-titles' }, [ sectionname ]));
			for (let j = 0; j < max_cols && node.firstChild; j++)
				trEl.appendChild(node.firstChild);
			trEl.appendChild(this.renderRowActions(cfgsections[i]));
			tableEl.appendChild(trEl);
		}, this);
		if (nodes.length == 0)
			tableEl.appendChild(E('tr', { 'class': 'tr cbi-section-table-row placeholder' },
				E('td', { 'class': 'td' }, E('em', {}, _('This section contains no values yet')))));
		sectionEl.appendChild(tableEl);
		sectionEl.appendChild(this.renderSectionAdd('cbi-tblsection-create'));
		dom.bindClassInstance(sectionEl, this);
		return sectionEl;
	},

	renderHeaderRows(max_cols) {
		const trEls = E([]);
		const anon_class = !this.anonymous ? 'named' : 'anonymous';
		const columns = this.children.slice(0, max_cols).filter(function(opt) { return !opt.optional && !opt.modalonly; });
		if (!columns.some(function(opt) { return !!opt.title; }))
			return trEls;
		const trEl = E('tr', { 'class': 'tr cbi-section-table-titles ' + anon_class });
		if (!this.anonymous || this.sectiontitle)
			trEl.appendChild(E('th', { 'class': 'th cbi-section-table-cell' }, _('Name')));
		columns.forEach(function(opt) {
			const th = E('th', { 'class': 'th cbi-section-table-cell', 'data-type': opt.__name__ });
			if (opt.width != null)
				th.style.width = (typeof(opt.width) == 'number') ? opt.width + 'px' : opt.width;
			dom.content(th, opt.title);
			trEl.appendChild(th);
		});
		if (this.sortable || this.extedit || this.addremove || this instanceof CBIGridSection)
			trEl.appendChild(E('th', { 'class': 'th cbi-section-table-cell cbi-section-actions' }));
		trEls.appendChild(trEl);
		return trEls;
	},

	renderRowActions(section_id, more_label) {
		if (!this.sortable && !this.extedit && !this.addremove && !more_label)
			return E([]);
		const tdEl = E('td', { 'class': 'td cbi-section-table-cell nowrap cbi-section-actions' }, E('div'));
		if (more_label)
			dom.append(tdEl.lastElementChild, E('button', {
				'title': more_label,
				'class': 'cbi-button cbi-button-edit',
				'click': ui.createHandlerFn(this, 'renderMoreOptionsModal', section_id)
			}, [ more_label ]));
		if (this.addremove) {
			const btn_title = this.titleFn('removebtntitle', section_id);
			dom.append(tdEl.lastElementChild, E('button', {
				'title': btn_title || _('Delete'),
				'class': 'cbi-button cbi-button-remove',
				'click': ui.createHandlerFn(this, 'handleRemove', section_id)
			}, [ btn_title || _('Delete') ]));
		}
		return tdEl;
	},

	handleModalCancel(modalMap, ev) {
		return Promise.resolve(ui.hideModal());
	},

	handleModalSave(modalMap, ev) {
		return modalMap.save(null, true)
			.then(L.bind(this.map.load, this.map))
			.then(L.bind(this.map.reset, this.map))
			.then(ui.hideModal)
			.catch(function() {});
	},

	addModalOptions(modalSection, section_id, ev) {},

	renderMoreOptionsModal(section_id, ev) {
		const parent = this.map;
		const m = new CBIMap(this.map.config, null, null);
		const s = m.section(CBINamedSection, section_id, this.sectiontype);
		let title = parent.title, name;
		m.parent = parent;
		if ((name = this.titleFn('modaltitle', section_id)) != null)
			title = name;
		else if ((name = this.titleFn('sectiontitle', section_id)) != null)
			title = '%s - %s'.format(parent.title, name);
		else if (!this.anonymous)
			title = '%s - %s'.format(parent.title, section_id);
		this.children.forEach(function(o1) {
			if (o1.modalonly === false)
				return;
			const o2 = s.option(o1.constructor, o1.option, o1.title, o1.description);
			for (const k in o1) {
				if (!o1.hasOwnProperty(k))
					continue;
				switch (k) {
				case 'map':
				case 'section':
				case 'option':
				case 'title':
				case 'description':
					continue;
				default:
					o2[k] = o1[k];
				}
			}
		});
		return Promise.resolve(this.addModalOptions(s, section_id, ev)).then(L.bind(m.render, m)).then(L.bind(function(nodes) {
			ui.showModal(title, [
				nodes,
				E('div', { 'class': 'right' }, [
					E('button', { 'class': 'btn', 'click': ui.createHandlerFn(this, 'handleModalCancel', m) }, [ _('Dismiss') ]), ' ',
					E('button', { 'class': 'cbi-button cbi-button-positive important', 'click': ui.createHandlerFn(this, 'handleModalSave', m) }, [ _('Save') ])
				])
			], 'cbi-modal');
		}, this)).catch(L.error);
	}
});

const CBIGridSection = CBITableSection.extend({
	__name__: 'CBI.GridSection',

	tab(name, title, description) {
		CBIAbstractSection.prototype.tab.call(this, name, title, description);
	},

	handleAdd(ev, name) {
		const section_id = this.map.data.add(this.uciconfig || this.map.config, this.sectiontype, name);
		this.addedSection = section_id;
		return this.renderMoreOptionsModal(section_id);
	},

	handleModalSave(...args) {
		return this.super('handleModalSave', args).then(L.bind(function() { this.addedSection = null; }, this));
	},

	handleModalCancel(...args) {
		if (this.addedSection != null) {
			this.map.data.remove(this.uciconfig || this.map.config, this.addedSection);
			this.addedSection = null;
		}
		return this.super('handleModalCancel', args);
	},

	renderUCISection(section_id) {
		return this.renderOptions(null, section_id);
	},

	renderChildren(tab_name, section_id, in_table) {
		const tasks = [];
		let index = 0;
		this.children.forEach(function(opt) {
			if (opt.disable || opt.modalonly)
				return;
			if (opt.editable)
				tasks.push(opt.render(index++, section_id, in_table));
			else
				tasks.push(this.renderTextValue(section_id, opt));
		}, this);
		return Promise.all(tasks);
	},

	renderTextValue(section_id, opt) {
		const title = this.stripTags(opt.title).trim();
		const value = opt.textvalue(section_id);
		return E('td', {
			'class': 'td cbi-value-field',
			'data-title': (title != '') ? title : null,
			'data-name': opt.option,
			'data-type': opt.typename || opt.__name__
		}, (value != null) ? value : E('em', _('none')));
	},

	renderRowActions(section_id) {
		return this.super('renderRowActions', [ section_id, _('Edit') ]);
	},

	parse() {
		const tasks = [];
		this.cfgsections().forEach(function(section_id) {
			this.children.forEach(function(child) {
				if (child.editable && !child.modalonly)
					tasks.push(child.parse(section_id));
			});
		}, this);
		return Promise.all(tasks);
	}
});

const CBINamedSection = CBIAbstractSection.extend({
	__name__: 'CBI.NamedSection',

	__init__(map, section_id, ...args) {
		this.super('__init__', [ map ].concat(args));
		this.section = section_id;
	},

	cfgsections() {
		return [ this.section ];
	},

	handleAdd(ev) {
		this.map.data.add(this.uciconfig || this.map.config, this.sectiontype, this.section);
		return this.map.save(null, true);
	},

	handleRemove(ev) {
		this.map.data.remove(this.uciconfig || this.map.config, this.section);
		return this.map.save(null, true);
	},

	renderContents(data) {
		const ucidata = data[0], nodes = data[1];
		const config_name = this.uciconfig || this.map.config;
		const sectionEl = E('div', {
			'id': ucidata ? null : 'cbi-%s-%s'.format(config_name, this.section),
			'class': 'cbi-section'
		});
		if (typeof(this.title) === 'string' && this.title !== '')
			sectionEl.appendChild(E('h3', {}, this.title));
		if (typeof(this.description) === 'string' && this.description !== '')
			sectionEl.appendChild(E('div', { 'class': 'cbi-section-descr' }, this.description));
		if (ucidata) {
			if (this.addremove)
				sectionEl.appendChild(E('div', { 'class': 'cbi-section-remove right' },
					E('button', { 'class': 'cbi-button', 'click': ui.createHandlerFn(this, 'handleRemove') }, [ _('Delete') ])));
			sectionEl.appendChild(E('div', {
				'id': 'cbi-%s-%s'.format(config_name, this.section),
				'class': 'cbi-section-node',
				'data-section-id': this.section
			}, nodes));
		}
		else if (this.addremove) {
			sectionEl.appendChild(E('button', { 'class': 'cbi-button cbi-button-add', 'click': ui.createHandlerFn(this, 'handleAdd') }, [ _('Add') ]));
		}
		dom.bindClassInstance(sectionEl, this);
		return sectionEl;
	},

	render() {
		return Promise.all([
			this.map.data.get(this.uciconfig || this.map.config, this.section),
			this.renderUCISection(this.section)
		]).then(this.renderContents.bind(this));
	}
});

const CBIValue = CBIAbstractValue.extend({
	__name__: 'CBI.Value',

	value(key, val) {
		this.keylist = this.keylist || [];
		this.keylist.push(String(key));
		this.vallist = this.vallist || [];
		this.vallist.push(dom.elem(val) ? val : String(val != null ? val : key));
	},

	render(option_index, section_id, in_table) {
		return Promise.resolve(this.cfgvalue(section_id))
			.then(this.renderWidget.bind(this, section_id, option_index))
			.then(this.renderFrame.bind(this, section_id, in_table, option_index));
	},

	renderFrame(section_id, in_table, option_index, nodes) {
		const config_name = this.uciconfig || this.section.uciconfig || this.map.config;
		const depend_list = this.transformDepList(section_id);
		let optionEl;
		if (in_table) {
			const title = this.stripTags(this.title).trim();
			optionEl = E('td', {
				'class': 'td cbi-value-field',
				'data-title': (title != '') ? title : null,
				'data-name': this.option,
				'data-type': this.typename || this.__name__
			}, E('div', {
				'id': 'cbi-%s-%s-%s'.format(config_name, section_id, this.option),
				'data-index': option_index,
				'data-depends': depend_list,
				'data-field': this.cbid(section_id)
			}));
		}
		else {
			optionEl = E('div', {
				'class': 'cbi-value',
				'id': 'cbi-%s-%s-%s'.format(config_name, section_id, this.option),
				'data-index': option_index,
				'data-depends': depend_list,
				'data-field': this.cbid(section_id),
				'data-name': this.option,
				'data-type': this.typename || this.__name__
			});
			if (typeof(this.title) === 'string' && this.title !== '') {
				optionEl.appendChild(E('label', {
					'class': 'cbi-value-title',
					'for': 'widget.cbid.%s.%s.%s'.format(config_name, section_id, this.option)
				}, this.title));
				optionEl.appendChild(E('div', { 'class': 'cbi-value-field' }));
			}
		}
		if (nodes)
			(optionEl.lastChild || optionEl).appendChild(nodes);
		if (!in_table && typeof(this.description) === 'string' && this.description !== '')
			dom.append(optionEl.lastChild || optionEl, E('div', { 'class': 'cbi-value-description' }, this.description));
		if (depend_list && depend_list.length)
			optionEl.classList.add('hidden');
		optionEl.addEventListener('widget-change', L.bind(this.map.checkDepends, this.map));
		dom.bindClassInstance(optionEl, this);
		return optionEl;
	},

	renderWidget(section_id, option_index, cfgvalue) {
		const value = (cfgvalue != null) ? cfgvalue : this.default;
		const choices = this.transformChoices();
		let widget;
		if (choices)
			widget = new ui.Combobox(Array.isArray(value) ? value.join(' ') : value, choices, {
				id: this.cbid(section_id), sort: this.keylist, optional: this.optional || this.rmempty,
				datatype: this.datatype, select_placeholder: this.placeholder, validate: L.bind(this.validate, this, section_id)
			});
		else
			widget = new ui.Textfield(Array.isArray(value) ? value.join(' ') : value, {
				id: this.cbid(section_id), password: this.password, optional: this.optional || this.rmempty,
				datatype: this.datatype, placeholder: this.placeholder, validate: L.bind(this.validate, this, section_id)
			});
		return widget.render();
	}
});

const CBIDynamicList = CBIValue.extend({
	__name__: 'CBI.DynamicList',

	renderWidget(section_id, option_index, cfgvalue) {
		const value = (cfgvalue != null) ? cfgvalue : this.default;
		const widget = new ui.DynamicList(L.toArray(value), this.transformChoices(), {
			id: this.cbid(section_id), sort: this.keylist, optional: this.optional || this.rmempty,
			datatype: this.datatype, placeholder: this.placeholder, validate: L.bind(this.validate, this, section_id)
		});
		return widget.render();
	}
});

const CBIListValue = CBIValue.extend({
	__name__: 'CBI.ListValue',

	__init__(...args) {
		this.super('__init__', args);
		this.widget = 'select';
		this.deplist = [];
	},

	renderWidget(section_id, option_index, cfgvalue) {
		const widget = new ui.Select((cfgvalue != null) ? cfgvalue : this.default, this.transformChoices(), {
			id: this.cbid(section_id), size: this.size, sort: this.keylist, optional: this.optional,
			placeholder: this.placeholder, validate: L.bind(this.validate, this, section_id)
		});
		return widget.render();
	},

});

const CBIFlagValue = CBIValue.extend({
	__name__: 'CBI.FlagValue',

	__init__(...args) {
		this.super('__init__', args);
		this.enabled = '1';
		this.disabled = '0';
		this.default = this.disabled;
	},

	renderWidget(section_id, option_index, cfgvalue) {
		const widget = new ui.Checkbox((cfgvalue != null) ? cfgvalue : this.default, {
			id: this.cbid(section_id), value_enabled: this.enabled, value_disabled: this.disabled,
			validate: L.bind(this.validate, this, section_id)
		});
		return widget.render();
	},

	formvalue(section_id) {
		const node = this.map.findElement('id', this.cbid(section_id));
		const checked = node ? dom.callClassMethod(node, 'isChecked') : false;
		return checked ? this.enabled : this.disabled;
	},

	textvalue(section_id) {
		let cval = this.cfgvalue(section_id);
		if (cval == null)
			cval = this.default;
		return (cval == this.enabled) ? _('Yes') : _('No');
	},

	parse(section_id) {
		if (this.isActive(section_id)) {
			const fval = this.formvalue(section_id);
			if (!this.isValid(section_id))
				return Promise.reject(this.invalidError(section_id));
			if (fval == this.default && (this.optional || this.rmempty))
				return Promise.resolve(this.remove(section_id));
			return Promise.resolve(this.write(section_id, fval));
		}
		return Promise.resolve(this.remove(section_id));
	}
});

const CBIMultiValue = CBIDynamicList.extend({
	__name__: 'CBI.MultiValue',

	__init__(...args) {
		this.super('__init__', args);
		this.placeholder = _('-- Please choose --');
	},

	renderWidget(section_id, option_index, cfgvalue) {
		const value = (cfgvalue != null) ? cfgvalue : this.default;
		const widget = new ui.Dropdown(L.toArray(value), this.transformChoices(), {
			id: this.cbid(section_id), sort: this.keylist, multiple: true, optional: this.optional || this.rmempty,
			select_placeholder: this.placeholder, validate: L.bind(this.validate, this, section_id)
		});
		return widget.render();
	}
});

const CBIDummyValue = CBIValue.extend({
	__name__: 'CBI.DummyValue',

	renderWidget(section_id, option_index, cfgvalue) {
		const value = (cfgvalue != null) ? cfgvalue : this.default;
		const hiddenEl = new ui.Hiddenfield(value, { id: this.cbid(section_id) });
		return E([ hiddenEl.render(), this.rawhtml ? E('div', {}, value) : E('div', {}, [ value == null ? '' : value ]) ]);
	},

	remove() {},
	write() {}
});

const CBIHiddenValue = CBIValue.extend({
	__name__: 'CBI.HiddenValue',

	renderWidget(section_id, option_index, cfgvalue) {
		return new ui.Hiddenfield((cfgvalue != null) ? cfgvalue : this.default, { id: this.cbid(section_id) }).render();
	}
});

return baseclass.extend({
	Map: CBIMap,
	AbstractSection: CBIAbstractSection,
	AbstractValue: CBIAbstractValue,
	TypedSection: CBITypedSection,
	TableSection: CBITableSection,
	GridSection: CBIGridSection,
	NamedSection: CBINamedSection,
	Value: CBIValue,
	DynamicList: CBIDynamicList,
	ListValue: CBIListValue,
	Flag: CBIFlagValue,
	MultiValue: CBIMultiValue,
	DummyValue: CBIDummyValue,
	HiddenValue: CBIHiddenValue
});
