'use strict';
'require validation';
'require baseclass';
'require dom';
'require uci';

/*
 * LuCI.ui as the loxgw views and the harness form use it, from LuCI's documented API:
 * widgets (Textfield, Checkbox, Select, Dropdown, Combobox, DynamicList, Textarea,
 * Hiddenfield) bound to their node, with getValue/setValue/isValid/triggerValidation,
 * 'widget-change' events and datatype validation (addValidator); modal dialogs,
 * notifications, createHandlerFn, changes.apply and instantiateView. Rendering is
 * plainer than LuCI's (a dropdown is a list of checkboxes), the contract is the same.
 */

const UIElement = baseclass.extend({
	__init__(value, options) {
		this.value = value;
		this.options = Object.assign({}, options);
	},

	getValue() {
		return this.control ? this.control.value : null;
	},

	setValue(value) {
		if (this.control)
			this.control.value = (value == null) ? '' : value;
	},

	setPlaceholder(value) {
		if (this.control)
			this.control.setAttribute('placeholder', value);
	},

	isValid() {
		return this.validState !== false;
	},

	isChanged() {
		return this.node ? this.node.getAttribute('data-changed') == 'true' : false;
	},

	getValidationError() {
		return this.validationError || '';
	},

	triggerValidation() {
		if (typeof(this.validate) != 'function')
			return false;
		const wasValid = this.isValid();
		this.validate();
		return wasValid != this.isValid();
	},

	// Validation of this.control on `events`; the result lands in this.validState.
	setValidator(optional, datatype, vfunc) {
		const self = this;
		const check = datatype ? validation.compile(datatype) : null;
		this.validate = function() {
			// As in LuCI, a field not in the page yet is not judged.
			if (!self.node || !document.body.contains(self.node))
				return true;
			const value = self.getValue();
			let result = true;
			const empty = (value == null || value === '' || (Array.isArray(value) && !value.length));
			if (empty && !optional)
				result = _('Expecting: %s').format(_('non-empty value'));
			else if (!empty && check) {
				const values = Array.isArray(value) ? value : [ value ];
				for (let i = 0; i < values.length && result === true; i++)
					result = check(values[i]);
			}
			if (result === true && typeof(vfunc) == 'function') {
				const r = vfunc(value);
				if (r !== true)
					result = (typeof(r) == 'string') ? r : _('Invalid value');
			}
			self.setValidity(result);
			return result === true;
		};
		return this.validate;
	},

	setValidity(result) {
		const field = this.control || this.node;
		this.validState = (result === true);
		this.validationError = (result === true) ? '' : result;
		if (!field)
			return;
		field.classList.toggle('cbi-input-invalid', result !== true);
		if (result === true) {
			field.removeAttribute('data-tooltip');
			field.dispatchEvent(new CustomEvent('validation-success', { bubbles: true }));
		}
		else {
			field.setAttribute('data-tooltip', result);
			field.dispatchEvent(new CustomEvent('validation-failure', { bubbles: true, detail: { message: result } }));
		}
	},

	setUpdateEvents(target, ...events) {
		const self = this;
		events.forEach(function(ev) {
			target.addEventListener(ev, function() {
				if (self.validate)
					self.validate();
				self.node.setAttribute('data-changed', 'true');
				self.node.dispatchEvent(new CustomEvent('widget-update', { bubbles: true }));
			});
		});
	},

	setChangeEvents(target, ...events) {
		const self = this;
		events.forEach(function(ev) {
			target.addEventListener(ev, function() {
				self.node.setAttribute('data-changed', 'true');
				self.node.dispatchEvent(new CustomEvent('widget-change', { bubbles: true }));
			});
		});
	},

	bind(node, control) {
		this.node = node;
		this.control = control;
		dom.bindClassInstance(node, this);
		// LuCI validates a widget only when it has a datatype or a validate function;
		// `optional` defaults to true.
		if (this.options.validate || this.options.datatype)
			this.setValidator(this.options.hasOwnProperty('optional') ? !!this.options.optional : true,
				this.options.datatype, this.options.validate);
		return node;
	}
});

const UITextfield = UIElement.extend({
	__name__: 'UI.Textfield',
	render() {
		const input = E('input', {
			'id': this.options.id ? 'widget.' + this.options.id : null,
			'name': this.options.name,
			'type': this.options.password ? 'password' : 'text',
			'class': this.options.password ? 'cbi-input-password' : 'cbi-input-text',
			'placeholder': this.options.placeholder,
			'disabled': this.options.disabled ? '' : null,
			'maxlength': this.options.maxlength
		});
		input.value = (this.value == null) ? '' : this.value;
		const node = E('div', { 'id': this.options.id }, [ input ]);
		this.setUpdateEvents(input, 'keyup', 'blur');
		this.setChangeEvents(input, 'change');
		return this.bind(node, input);
	}
});

const UITextarea = UIElement.extend({
	__name__: 'UI.Textarea',
	render() {
		const area = E('textarea', { 'id': this.options.id ? 'widget.' + this.options.id : null, 'class': 'cbi-input-textarea' });
		area.value = (this.value == null) ? '' : this.value;
		const node = E('div', { 'id': this.options.id }, [ area ]);
		this.setUpdateEvents(area, 'keyup', 'blur');
		this.setChangeEvents(area, 'change');
		return this.bind(node, area);
	}
});

const UIHiddenfield = UIElement.extend({
	__name__: 'UI.Hiddenfield',
	render() {
		const input = E('input', { 'type': 'hidden', 'id': this.options.id });
		input.value = (this.value == null) ? '' : this.value;
		return this.bind(input, input);
	}
});

const UICheckbox = UIElement.extend({
	__name__: 'UI.Checkbox',
	render() {
		const enabled = this.options.value_enabled || '1';
		const box = E('input', { 'type': 'checkbox', 'id': this.options.id ? 'widget.' + this.options.id : null, 'value': enabled });
		box.checked = (this.value == enabled);
		const node = E('div', { 'class': 'cbi-checkbox', 'id': this.options.id }, [ box, E('label', { 'for': box.id }) ]);
		this.setUpdateEvents(box, 'click', 'blur');
		this.setChangeEvents(box, 'change');
		return this.bind(node, box);
	},
	isChecked() {
		return this.control.checked;
	},
	getValue() {
		return this.control.checked ? (this.options.value_enabled || '1') : (this.options.value_disabled || '0');
	},
	setValue(value) {
		this.control.checked = (value == (this.options.value_enabled || '1'));
	}
});

function choiceKeys(choices, sort) {
	const keys = Object.keys(choices || {});
	if (Array.isArray(sort))
		return sort.filter(function(k) { return keys.indexOf(k) >= 0; }).concat(keys.filter(function(k) { return sort.indexOf(k) < 0; }));
	if (sort === true)
		return keys.sort(L.naturalCompare);
	return keys;
}

// A choice label: a node is used as it is (cloned), anything else as text.
function label(choice) {
	return dom.elem(choice) ? choice.cloneNode(true) : document.createTextNode(String(choice));
}

const UISelect = UIElement.extend({
	__name__: 'UI.Select',
	__init__(value, choices, options) {
		this.super('__init__', [ value, options ]);
		this.choices = choices || {};
	},
	render() {
		const select = E('select', { 'id': this.options.id ? 'widget.' + this.options.id : null, 'class': 'cbi-input-select' });
		if (this.options.optional)
			select.appendChild(E('option', { 'value': '' }, [ this.options.placeholder || _('-- Please choose --') ]));
		const keys = choiceKeys(this.choices, this.options.sort);
		// A value outside the choices (written by hand) stays selectable, as LuCI's combobox keeps it.
		if (this.value != null && this.value !== '' && keys.indexOf(this.value) < 0)
			keys.push(this.value);
		keys.forEach(function(key) {
			if (key === '' && this.options.optional)
				return;
			const option = E('option', { 'value': key });
			option.appendChild(label(this.choices.hasOwnProperty(key) ? this.choices[key] : key));
			select.appendChild(option);
		}, this);
		select.value = (this.value == null) ? '' : this.value;
		const node = E('div', { 'id': this.options.id }, [ select ]);
		this.setUpdateEvents(select, 'change', 'blur');
		this.setChangeEvents(select, 'change');
		return this.bind(node, select);
	}
});

const UIDropdown = UIElement.extend({
	__name__: 'UI.Dropdown',
	__init__(value, choices, options) {
		this.super('__init__', [ value, options ]);
		this.choices = choices || {};
	},
	render() {
		if (!this.options.multiple) {
			const single = new UISelect(this.value, this.choices, Object.assign({}, this.options, {
				placeholder: this.options.select_placeholder || this.options.placeholder
			}));
			const node = single.render();
			this.single = single;
			dom.bindClassInstance(node, this);
			this.node = node;
			this.control = single.control;
			return node;
		}
		// LuCI's markup: div.cbi-dropdown[multiple] holding ul > li[data-value] (a checkbox
		// in a form, then the label), span.more and span.open. A click opens it, a click on
		// an item while open toggles it (li[selected]), a click on span.open closes it.
		const values = L.toArray(this.value);
		const list = E('ul', { 'tabindex': '-1' });
		choiceKeys(this.choices, this.options.sort).forEach(function(key) {
			const box = E('input', { 'type': 'checkbox', 'tabindex': '-1' });
			const li = E('li', { 'data-value': key }, [ E('form', {}, [ box ]), E('label', {}, [ label(this.choices[key]) ]) ]);
			if (values.indexOf(key) >= 0) {
				li.setAttribute('selected', '');
				box.checked = true;
			}
			list.appendChild(li);
		}, this);
		const node = E('div', { 'id': this.options.id, 'class': 'cbi-dropdown', 'multiple': '', 'tabindex': '0' }, [
			list, E('span', { 'class': 'more', 'tabindex': '-1' }), E('span', { 'class': 'open', 'tabindex': '-1' }, [ '\u25be' ])
		]);
		node.addEventListener('click', L.bind(this.handleClick, this));
		this.setUpdateEvents(node, 'cbi-dropdown-change');
		this.setChangeEvents(node, 'cbi-dropdown-change');
		return this.bind(node, node);
	},
	handleClick(ev) {
		const node = ev.currentTarget;
		const li = ev.target.closest ? ev.target.closest('li') : null;
		if (!node.hasAttribute('open'))
			node.setAttribute('open', '');
		else if (li && node.contains(li)) {
			const box = li.querySelector('input[type=checkbox]');
			if (li.hasAttribute('selected'))
				li.removeAttribute('selected');
			else
				li.setAttribute('selected', '');
			box.checked = li.hasAttribute('selected');
			node.dispatchEvent(new CustomEvent('cbi-dropdown-change', { bubbles: true }));
		}
		else if (ev.target.classList.contains('open') || ev.target.classList.contains('more'))
			node.removeAttribute('open');
		ev.preventDefault();
		ev.stopPropagation();
	},
	getValue() {
		if (this.single)
			return this.single.getValue();
		return Array.from(this.node.querySelectorAll('li[selected]')).map(function(li) { return li.getAttribute('data-value'); });
	},
	setValue(value) {
		if (this.single)
			return this.single.setValue(value);
		const values = L.toArray(value);
		this.node.querySelectorAll('li[data-value]').forEach(function(li) {
			const on = values.indexOf(li.getAttribute('data-value')) >= 0;
			if (on)
				li.setAttribute('selected', '');
			else
				li.removeAttribute('selected');
			li.querySelector('input[type=checkbox]').checked = on;
		});
	},
	isValid() {
		return this.single ? this.single.isValid() : this.validState !== false;
	},
	triggerValidation() {
		return this.single ? this.single.triggerValidation() : UIElement.prototype.triggerValidation.call(this);
	}
});

const UICombobox = UIDropdown.extend({
	__name__: 'UI.Combobox'
});

const UIDynamicList = UIElement.extend({
	__name__: 'UI.DynamicList',
	__init__(values, choices, options) {
		this.super('__init__', [ L.toArray(values), options ]);
		this.choices = choices;
	},
	render() {
		const self = this;
		this.list = E('div', { 'class': 'cbi-dynlist-items' });
		const input = E('input', { 'type': 'text', 'class': 'cbi-input-text', 'placeholder': this.options.placeholder,
			'id': this.options.id ? 'widget.' + this.options.id : null });
		const add = E('button', { 'class': 'cbi-button cbi-button-add', 'type': 'button' }, [ '+' ]);
		const node = E('div', { 'id': this.options.id, 'class': 'cbi-dynlist', 'data-dynlist': '' },
			[ this.list, E('div', { 'class': 'add-item' }, [ input, add ]) ]);
		this.value.forEach(function(v) { self.addItem(v); });
		const check = this.options.datatype ? validation.compile(this.options.datatype) : null;
		this.control = input;
		this.node = node;
		dom.bindClassInstance(node, this);
		// The text field holds an item being typed: it is checked as one item.
		this.validate = function() {
			let result = true;
			const value = input.value.trim();
			if (value !== '' && check)
				result = check(value);
			if (result === true && value !== '' && typeof(self.options.validate) == 'function') {
				const r = self.options.validate(value);
				if (r !== true)
					result = (typeof(r) == 'string') ? r : _('Invalid value');
			}
			self.setValidity(result);
			return result === true;
		};
		const commit = function(ev) {
			if (ev)
				ev.preventDefault();
			const value = input.value.trim();
			if (value === '' || !self.validate())
				return;
			self.addItem(value);
			input.value = '';
			self.node.setAttribute('data-changed', 'true');
			self.node.dispatchEvent(new CustomEvent('widget-change', { bubbles: true }));
		};
		add.addEventListener('click', commit);
		input.addEventListener('keydown', function(ev) {
			if (ev.key == 'Enter')
				commit(ev);
		});
		input.addEventListener('keyup', function() { self.validate(); });
		input.addEventListener('blur', function() { self.validate(); });
		return node;
	},
	addItem(value) {
		const self = this;
		const item = E('div', { 'class': 'item', 'data-value': value }, [
			E('span', {}, [ value ]),
			E('button', { 'class': 'cbi-button cbi-button-remove', 'type': 'button', 'click': function() {
				item.parentNode.removeChild(item);
				self.node.dispatchEvent(new CustomEvent('widget-change', { bubbles: true }));
			} }, [ '×' ])
		]);
		this.list.appendChild(item);
	},
	getValue() {
		const values = [];
		this.list.querySelectorAll('.item').forEach(function(item) { values.push(item.getAttribute('data-value')); });
		const pending = this.control.value.trim();
		if (pending !== '')
			values.push(pending);
		return values;
	},
	setValue(values) {
		dom.content(this.list, null);
		L.toArray(values).forEach(function(v) { this.addItem(v); }, this);
	}
});

let modalDiv = null;

return baseclass.extend({
	__init__() {
		this.changes = new (baseclass.extend({
			init() {},
			setIndicator() {},
			displayStatus(type, content) {
				const status = document.getElementById('applyreboot-status') ||
					document.body.appendChild(E('div', { 'id': 'applyreboot-status', 'class': 'uci-dialog' }));
				if (type === false) {
					dom.content(status, null);
					return;
				}
				status.className = 'uci-dialog alert-message ' + type;
				dom.content(status, content);
			},
			// Applies the staged UCI changes, then reloads the page as LuCI does.
			apply(checked) {
				const self = this;
				self.displayStatus('notice spinning', E('p', {}, [ _('Starting configuration apply…') ]));
				return uci.callApply(10, !!checked).then(function(rv) {
					if (rv !== 0 && rv !== 5)
						throw new Error(_('Apply request failed with status %d').format(rv));
					return uci.callConfirm();
				}).then(function() {
					document.dispatchEvent(new CustomEvent('uci-applied'));
					self.displayStatus('notice', E('p', {}, [ _('Configuration changes applied.') ]));
					window.setTimeout(function() {
						window.location = window.location.href.split('#')[0];
					}, (L.env.apply_display || 1.5) * 1000);
				}).catch(function(e) {
					self.displayStatus('warning', E('p', {}, [ String(e && e.message || e) ]));
				});
			}
		}))();
		this.tabs = {
			initTabGroup() {},
			updateTabs() {}
		};
	},

	AbstractElement: UIElement,
	Textfield: UITextfield,
	Textarea: UITextarea,
	Hiddenfield: UIHiddenfield,
	Checkbox: UICheckbox,
	Select: UISelect,
	Dropdown: UIDropdown,
	Combobox: UICombobox,
	DynamicList: UIDynamicList,

	showModal(title, children, ...classes) {
		if (!modalDiv)
			modalDiv = document.body.appendChild(E('div', { 'id': 'modal_overlay' }, [ E('div', { 'class': 'modal', 'role': 'dialog' }) ]));
		const dlg = modalDiv.firstElementChild;
		dlg.setAttribute('class', 'modal');
		classes.forEach(function(c) { dlg.classList.add(c); });
		dom.content(dlg, E('h4', {}, title));
		dom.append(dlg, children);
		document.body.classList.add('modal-overlay-active');
		return dlg;
	},

	hideModal() {
		document.body.classList.remove('modal-overlay-active');
	},

	addNotification(title, children, ...classes) {
		const mc = document.querySelector('#maincontent') || document.body;
		const msg = E('div', { 'class': 'alert-message fade-in', 'style': 'display:flex' }, [
			E('div', { 'style': 'flex:10' }),
			E('div', { 'style': 'flex:1 1 auto; display:flex' }, [
				E('button', { 'class': 'btn', 'style': 'margin-left:auto; margin-top:auto', 'click': function(ev) {
					dom.parent(ev.target, '.alert-message').remove();
				} }, [ _('Dismiss') ])
			])
		]);
		if (title != null)
			dom.append(msg.firstElementChild, E('h4', {}, title));
		dom.append(msg.firstElementChild, children);
		classes.forEach(function(c) { msg.classList.add(c); });
		mc.insertBefore(msg, mc.firstElementChild);
		return msg;
	},

	showIndicator() { return true; },
	hideIndicator() { return true; },

	addValidator(field, type, optional, vfunc, ...events) {
		const check = type ? validation.compile(type) : null;
		const run = function() {
			let result = true;
			const value = field.value;
			if (value === '' && !optional)
				result = _('Expecting: %s').format(_('non-empty value'));
			else if (value !== '' && check)
				result = check(value);
			if (result === true && typeof(vfunc) == 'function') {
				const r = vfunc(value);
				if (r !== true)
					result = (typeof(r) == 'string') ? r : _('Invalid value');
			}
			field.classList.toggle('cbi-input-invalid', result !== true);
			if (result === true)
				field.removeAttribute('data-tooltip');
			else
				field.setAttribute('data-tooltip', result);
			return result === true;
		};
		events.forEach(function(ev) { field.addEventListener(ev, run); });
		run();
		return run;
	},

	createHandlerFn(ctx, fn, ...args) {
		if (typeof(fn) == 'string')
			fn = ctx[fn];
		if (typeof(fn) != 'function')
			return null;
		return function(ev) {
			const target = ev.currentTarget;
			if (target.classList.contains('spinning'))
				return;
			const result = fn.call(ctx, ...args, ev);
			if (result instanceof Promise) {
				target.classList.add('spinning');
				target.disabled = true;
				result.finally(function() {
					target.classList.remove('spinning');
					target.disabled = false;
				});
			}
			return result;
		};
	},

	instantiateView(path) {
		return L.require('view.' + path.replace(/\//g, '.')).catch(function(err) {
			const view = document.getElementById('view');
			dom.content(view, E('div', { 'class': 'alert-message error' }, [ _('Failed to load view: %s').format(err.message) ]));
			throw err;
		});
	}
});
