/*
 * A small stand-in for LuCI's client runtime (luci.js), written for the loxgw tests
 * from LuCI's documented API (https://openwrt.github.io/luci/jsapi/): the class
 * system, L.require's class loader ('require x' lines, one factory per file), dom
 * (E() included), poll, request and view. Behaviour the views depend on is kept as
 * LuCI documents it, notably:
 *   - E(tag, attrs, children): an array of children becomes nodes and text nodes
 *     (null entries included, as the text "null"); any other non-node child is
 *     assigned to innerHTML;
 *   - a view's load() result goes to render(); render's nodes replace #view, then
 *     the Save/Save & Apply/Reset footer follows unless its handlers are null.
 * Every string assigned through innerHTML is recorded in window.__harness.html, so a
 * test can tell which content went in as markup.
 */
(function(window, document) {
	'use strict';

	const env = {};
	const harness = window.__harness = window.__harness || { html: [], errors: [] };

	/* --- classes ------------------------------------------------------------- */

	let classIndex = 0;
	const superStacks = {};

	const Class = Object.assign(function() {}, {
		extend(properties) {
			const props = {
				__id__: { value: classIndex },
				__base__: { value: this.prototype },
				__name__: { value: properties.__name__ || ('anonymous' + classIndex++) }
			};
			const ClassConstructor = function() {
				if (!(this instanceof ClassConstructor))
					throw new TypeError('Constructor must not be called without "new"');
				if (Object.getPrototypeOf(this).hasOwnProperty('__init__'))
					this.__init__.apply(this, arguments);
				else
					this.super('__init__', arguments);
			};
			for (const key in properties)
				if (!props[key] && properties.hasOwnProperty(key))
					props[key] = { value: properties[key], writable: true };
			ClassConstructor.prototype = Object.create(this.prototype, props);
			ClassConstructor.prototype.constructor = ClassConstructor;
			Object.assign(ClassConstructor, this);
			ClassConstructor.displayName = props.__name__.value + 'Class';
			return ClassConstructor;
		},

		singleton(properties, ...args) {
			return Class.extend(properties).instantiate(args);
		},

		instantiate(args) {
			return new (Function.prototype.bind.call(this, null, ...args))();
		},

		isSubclass(classValue) {
			return typeof(classValue) == 'function' && classValue.prototype instanceof this;
		},

		prototype: {
			varargs(args, offset, ...extra) {
				return extra.concat(Array.prototype.slice.call(args, offset));
			},

			// The nearest ancestor's `key` above the class whose method is running.
			super(key, ...callArgs) {
				if (key == null)
					return null;
				const slot = this.__id__ + '.' + key;
				const stack = superStacks[slot];
				let proto = Object.getPrototypeOf(stack ? stack[0] : Object.getPrototypeOf(this));
				while (proto != null && !proto.hasOwnProperty(key))
					proto = Object.getPrototypeOf(proto);
				if (proto == null)
					return null;
				let result = proto[key];
				if (callArgs.length > 0) {
					if (typeof(result) != 'function')
						throw new ReferenceError(key + ' is not a function in base class');
					if (Array.isArray(callArgs[0]) || LuCI.prototype.isArguments(callArgs[0]))
						callArgs = callArgs[0];
					if (stack)
						stack.unshift(proto);
					else
						superStacks[slot] = [ proto ];
					try {
						result = result.apply(this, callArgs);
					}
					finally {
						if (stack && stack.length > 1)
							stack.shift();
						else
							delete superStacks[slot];
					}
				}
				return result;
			},

			toString() {
				return '[' + this.constructor.displayName + ']';
			}
		}
	});

	/* --- requests and polling ------------------------------------------------ */

	const Response = Class.extend({
		__name__: 'LuCI.response',
		__init__(xhr, url, duration) {
			this.ok = xhr.status >= 200 && xhr.status <= 299;
			this.status = xhr.status;
			this.statusText = xhr.statusText;
			this.duration = duration;
			this.url = url;
			this.xhr = xhr;
			this.responseText = xhr.responseText;
			this.responseJSON = null;
		},
		json() {
			if (this.responseJSON == null)
				this.responseJSON = JSON.parse(this.responseText);
			return this.responseJSON;
		},
		text() {
			return this.responseText;
		}
	});

	const Request = Class.singleton({
		__name__: 'LuCI.request',
		interceptors: [],

		expandURL(url) {
			if (!/^(?:[^/]+:)?\/\//.test(url))
				url = location.protocol + '//' + location.host + url;
			return url;
		},

		request(target, options) {
			const opt = Object.assign({ method: 'GET' }, options);
			const url = this.expandURL(target);
			const start = Date.now();
			return new Promise(function(resolve, reject) {
				const xhr = new XMLHttpRequest();
				xhr.open(String(opt.method).toUpperCase(), url, true);
				if (opt.timeout)
					xhr.timeout = opt.timeout;
				let content = null;
				if (opt.content != null && typeof(opt.content) == 'object') {
					content = JSON.stringify(opt.content);
					xhr.setRequestHeader('Content-Type', 'application/json');
				}
				else if (opt.content != null) {
					content = String(opt.content);
				}
				xhr.onreadystatechange = function() {
					if (xhr.readyState !== 4)
						return;
					if (xhr.status === 0 && xhr.statusText === '') {
						reject(new Error('XHR request aborted by browser'));
						return;
					}
					const response = new Response(xhr, xhr.responseURL || url, Date.now() - start);
					Promise.all(Request.interceptors.map(function(fn) { return fn(response); }))
						.then(function() { resolve(response); }, reject);
				};
				xhr.send(content);
			});
		},

		get(url, options) {
			return this.request(url, Object.assign({ method: 'GET' }, options));
		},

		post(url, data, options) {
			return this.request(url, Object.assign({ method: 'POST', content: data }, options));
		},

		addInterceptor(fn) {
			if (typeof(fn) == 'function')
				this.interceptors.push(fn);
			return fn;
		}
	});

	const Poll = Class.singleton({
		__name__: 'LuCI.poll',
		queue: [],

		add(fn, interval) {
			if (interval == null || interval <= 0)
				interval = env.pollinterval || 5;
			if (isNaN(interval) || typeof(fn) != 'function')
				throw new TypeError('Invalid argument to LuCI.poll.add()');
			for (let i = 0; i < this.queue.length; i++)
				if (this.queue[i].fn === fn)
					return false;
			this.queue.push({ r: true, i: interval >>> 0, fn: fn });
			if (this.tick != null && !this.active())
				this.start();
			return true;
		},

		remove(fn) {
			const before = this.queue.length;
			this.queue = this.queue.filter(function(e) { return e.fn !== fn; });
			if (!this.queue.length)
				this.stop();
			return this.queue.length != before;
		},

		start() {
			if (this.active())
				return false;
			this.tick = 0;
			if (this.queue.length) {
				this.timer = window.setInterval(this.step, 1000);
				this.step();
			}
			return true;
		},

		stop() {
			if (!this.active())
				return false;
			window.clearInterval(this.timer);
			delete this.timer;
			delete this.tick;
			return true;
		},

		step() {
			for (let i = 0, e = null; (e = Poll.queue[i]) != null; i++) {
				if ((Poll.tick % e.i) != 0 || !e.r)
					continue;
				e.r = false;
				Promise.resolve(e.fn()).finally(function() { e.r = true; });
			}
			Poll.tick = (Poll.tick + 1) % Math.pow(2, 32);
		},

		active() {
			return this.timer != null;
		}
	});

	/* --- DOM ----------------------------------------------------------------- */

	const DOM = Class.singleton({
		__name__: 'LuCI.dom',
		registry: {},

		elem(e) {
			return e != null && typeof(e) == 'object' && 'nodeType' in e;
		},

		parse(s) {
			try {
				return new DOMParser().parseFromString(s, 'text/html').body.firstChild;
			}
			catch (e) {
				return null;
			}
		},

		matches(node, selector) {
			return this.elem(node) && node.matches ? node.matches(selector) : false;
		},

		parent(node, selector) {
			return (this.elem(node) && node.closest) ? node.closest(selector) : null;
		},

		append(node, children) {
			if (!this.elem(node))
				return null;
			if (Array.isArray(children)) {
				for (let i = 0; i < children.length; i++)
					if (this.elem(children[i]))
						node.appendChild(children[i]);
					else if (children !== null && children !== undefined)
						node.appendChild(document.createTextNode('' + children[i]));
				return node.lastChild;
			}
			if (typeof(children) === 'function')
				return this.append(node, children(node));
			if (this.elem(children))
				return node.appendChild(children);
			if (children !== null && children !== undefined) {
				harness.html.push('' + children);
				node.innerHTML = '' + children;
				return node.lastChild;
			}
			return null;
		},

		content(node, children) {
			if (!this.elem(node))
				return null;
			const dataNodes = node.querySelectorAll('[data-idref]');
			for (let i = 0; i < dataNodes.length; i++)
				delete this.registry[dataNodes[i].getAttribute('data-idref')];
			while (node.firstChild)
				node.removeChild(node.firstChild);
			return this.append(node, children);
		},

		attr(node, key, val) {
			if (!this.elem(node))
				return null;
			let attr = null;
			if (typeof(key) === 'object' && key !== null)
				attr = key;
			else if (typeof(key) === 'string')
				attr = {}, attr[key] = val;
			for (key in attr) {
				if (!attr.hasOwnProperty(key) || attr[key] == null)
					continue;
				switch (typeof(attr[key])) {
				case 'function':
					node.addEventListener(key, attr[key]);
					break;
				case 'object':
					node.setAttribute(key, JSON.stringify(attr[key]));
					break;
				default:
					node.setAttribute(key, attr[key]);
				}
			}
		},

		create() {
			const html = arguments[0];
			let attr = arguments[1];
			let data = arguments[2];
			let elem;
			if (!(attr instanceof Object) || Array.isArray(attr))
				data = attr, attr = null;
			if (Array.isArray(html)) {
				elem = document.createDocumentFragment();
				for (let i = 0; i < html.length; i++)
					elem.appendChild(this.create(html[i]));
			}
			else if (this.elem(html)) {
				elem = html;
			}
			else if (html.charCodeAt(0) === 60) {
				harness.html.push(html);
				elem = this.parse(html);
			}
			else {
				elem = document.createElement(html);
			}
			if (!elem)
				return null;
			this.attr(elem, attr);
			this.append(elem, data);
			return elem;
		},

		data(node, key, val) {
			if (!node || !node.getAttribute)
				return null;
			let id = node.getAttribute('data-idref');
			if (arguments.length > 1 && key == null) {
				if (id != null) {
					node.removeAttribute('data-idref');
					val = this.registry[id];
					delete this.registry[id];
					return val;
				}
				return null;
			}
			if (arguments.length > 2 && key != null && val == null) {
				if (id != null && this.registry[id]) {
					val = this.registry[id][key];
					delete this.registry[id][key];
					return val;
				}
				return null;
			}
			if (arguments.length > 2 && key != null && val != null) {
				if (id == null) {
					do { id = Math.floor(Math.random() * 0xffffffff).toString(16); }
					while (this.registry.hasOwnProperty(id));
					node.setAttribute('data-idref', id);
					this.registry[id] = {};
				}
				return (this.registry[id][key] = val);
			}
			if (arguments.length == 1)
				return id != null ? this.registry[id] : null;
			if (arguments.length == 2 && id != null && this.registry[id])
				return this.registry[id][key];
			return null;
		},

		bindClassInstance(node, inst) {
			if (!(inst instanceof Class))
				LuCI.prototype.error('TypeError', 'Argument must be a class instance');
			return this.data(node, '_class', inst);
		},

		findClassInstance(node) {
			let inst = null;
			do {
				inst = this.data(node, '_class');
				node = node.parentNode;
			}
			while (!(inst instanceof Class) && node != null);
			return inst;
		},

		callClassMethod(node, method, ...args) {
			const inst = this.findClassInstance(node);
			if (inst == null || typeof(inst[method]) != 'function')
				return null;
			return inst[method].call(inst, ...args);
		},

		isEmpty(node, ignoreFn) {
			for (let child = node && node.firstElementChild; child != null; child = child.nextElementSibling)
				if (!child.classList.contains('hidden') && !(ignoreFn && ignoreFn(child)))
					return false;
			return true;
		}
	});

	/* --- views --------------------------------------------------------------- */

	const View = Class.extend({
		__name__: 'LuCI.view',

		__init__() {
			const vp = document.getElementById('view');
			DOM.content(vp, E('div', { 'class': 'spinning' }, _('Loading view…')));
			return Promise.resolve(this.load())
				.then(function(result) {
					if (L.loaded)
						return result;
					return new Promise(function(resolve) {
						document.addEventListener('luci-loaded', function() { resolve(result); }, { once: true });
					});
				})
				.then(LuCI.prototype.bind(this.render, this))
				.then(LuCI.prototype.bind(function(nodes) {
					const vp = document.getElementById('view');
					DOM.content(vp, nodes);
					DOM.append(vp, this.addFooter());
					harness.rendered = (harness.rendered || 0) + 1;
				}, this)).catch(LuCI.prototype.error);
		},

		load() {},
		render() {},

		handleSave(ev) {
			const tasks = [];
			document.getElementById('maincontent').querySelectorAll('.cbi-map').forEach(function(map) {
				tasks.push(DOM.callClassMethod(map, 'save'));
			});
			return Promise.all(tasks);
		},

		handleSaveApply(ev, mode) {
			return this.handleSave(ev).then(function() {
				classes.ui.changes.apply(mode == '0');
			});
		},

		handleReset(ev) {
			const tasks = [];
			document.getElementById('maincontent').querySelectorAll('.cbi-map').forEach(function(map) {
				tasks.push(DOM.callClassMethod(map, 'reset'));
			});
			return Promise.all(tasks);
		},

		addFooter() {
			const footer = E([]);
			if (this.handleSaveApply || this.handleSave || this.handleReset) {
				footer.appendChild(E('div', { 'class': 'cbi-page-actions' }, [
					this.handleSaveApply ? E('button', {
						'class': 'btn cbi-button cbi-button-apply important',
						'click': classes.ui.createHandlerFn(this, function(ev) { return this.handleSaveApply(ev, '0'); })
					}, [ _('Save & Apply') ]) : '', ' ',
					this.handleSave ? E('button', {
						'class': 'cbi-button cbi-button-save',
						'click': classes.ui.createHandlerFn(this, 'handleSave')
					}, [ _('Save') ]) : '', ' ',
					this.handleReset ? E('button', {
						'class': 'cbi-button cbi-button-reset',
						'click': classes.ui.createHandlerFn(this, 'handleReset')
					}, [ _('Reset') ]) : ''
				]));
			}
			return footer;
		}
	});

	/* --- the LuCI object ----------------------------------------------------- */

	const classes = {
		baseclass: Class,
		dom: DOM,
		poll: Poll,
		request: Request,
		view: View
	};

	const LuCI = Class.extend({
		__name__: 'LuCI',

		__init__(setenv) {
			Object.assign(env, setenv);
			window.L = this;
			const domReady = new Promise(function(resolve) {
				if (document.readyState != 'loading')
					resolve();
				else
					document.addEventListener('DOMContentLoaded', resolve);
			});
			Promise.all([ domReady, this.require('ui'), this.require('rpc'), this.require('form') ])
				.then(LuCI.prototype.bind(this.setupDOM, this)).catch(this.error);
		},

		setupDOM() {
			this.loaded = true;
			Poll.start();
			document.dispatchEvent(new CustomEvent('luci-loaded'));
		},

		env: env,
		Class: Class,
		Poll: Poll,
		Request: Request,
		dom: DOM,
		view: View,

		raise(type, fmt, ...args) {
			const msg = fmt ? String.prototype.format.call(fmt, ...args) : null;
			let e;
			if (type instanceof Error) {
				e = type;
				if (msg)
					e.message = msg + ': ' + e.message;
			}
			else {
				e = new (window[type || 'Error'] || Error)(msg || 'Unspecified error');
				e.name = type || 'Error';
			}
			if (window.console && console.debug)
				console.debug(e);
			throw e;
		},

		error(type, fmt) {
			try {
				LuCI.prototype.raise.apply(LuCI.prototype, Array.prototype.slice.call(arguments));
			}
			catch (e) {
				if (!e.reported) {
					if (classes.ui)
						classes.ui.addNotification(e.name || _('Runtime error'), E('pre', {}, [ e.message ]), 'danger');
					else
						DOM.content(document.querySelector('#maincontent'), E('pre', { 'class': 'alert-message error' }, [ e.message ]));
					e.reported = true;
				}
				throw e;
			}
		},

		bind(fn, self, ...args) {
			return Function.prototype.bind.call(fn, self, ...args);
		},

		// Load a class file by dotted name: its leading 'require x [as y]' strings name the
		// classes passed to its factory (window, document, L, ...), which returns a class.
		require(name, from) {
			from = from || [];
			if (classes[name] != null) {
				if (from.indexOf(name) != -1)
					LuCI.prototype.raise('DependencyError', 'Circular dependency: class "%s" depends on "%s"',
						name, from.join('" which depends on "'));
				return Promise.resolve(classes[name]);
			}
			const url = env.base_url + '/' + name.replace(/\./g, '/') + '.js';
			from = [ name ].concat(from);
			const L = this;
			classes[name] = Request.get(url).then(function(res) {
				if (!res.ok)
					LuCI.prototype.raise('NetworkError', 'HTTP error %d while loading class file "%s"', res.status, url);
				const source = res.text();
				const depends = [];
				let args = '';
				const header = /^\s*(?:(?:\/\/[^\n]*|\/\*[\s\S]*?\*\/)\s*)*(?:'([^']*)'|"([^"]*)")\s*;?/;
				let rest = source;
				for (let m = header.exec(rest); m; m = header.exec(rest)) {
					const text = m[1] != null ? m[1] : m[2];
					const req = /^require[ \t]+(\S+)(?:[ \t]+as[ \t]+([a-zA-Z_]\S*))?$/.exec(text);
					if (req) {
						depends.push(LuCI.prototype.require.call(L, req[1], from));
						args += ', ' + (req[2] || req[1].replace(/[^a-zA-Z0-9_]/g, '_'));
					}
					else if (!/^use[ \t]+strict$/.test(text)) {
						break;
					}
					rest = rest.substring(m[0].length);
				}
				return Promise.all(depends).then(function(instances) {
					let factory;
					try {
						factory = eval('(function(window, document, L' + args + ') { ' + source + '\n})\n//# sourceURL=' + res.url + '\n');
					}
					catch (error) {
						LuCI.prototype.raise('SyntaxError', '%s\n  in %s', error.message, res.url);
					}
					const _class = factory.apply(factory, [ window, document, L ].concat(instances));
					if (!Class.isSubclass(_class))
						LuCI.prototype.error('TypeError', '"%s" factory yields invalid constructor', name);
					const instance = new _class();
					classes[name] = instance;
					return instance;
				});
			});
			return classes[name];
		},

		path(prefix, parts) {
			const url = [ prefix || '' ];
			for (let i = 0; i < parts.length; i++)
				if (/^(?:[a-zA-Z0-9_.%,;-]+\/)*[a-zA-Z0-9_.%,;-]+$/.test(parts[i]))
					url.push('/', parts[i]);
			if (url.length === 1)
				url.push('/');
			return url.join('');
		},

		url(...parts) {
			return this.path(env.scriptname, parts);
		},

		resource(...parts) {
			return this.path(env.resource, parts);
		},

		location() {
			return this.path(env.scriptname, env.requestpath || []);
		},

		isObject(val) {
			return val != null && typeof(val) == 'object';
		},

		isArguments(val) {
			return Object.prototype.toString.call(val) == '[object Arguments]';
		},

		toArray(val) {
			if (val == null)
				return [];
			if (Array.isArray(val))
				return val;
			if (typeof(val) == 'object')
				return [ val ];
			const s = String(val).trim();
			return s == '' ? [] : s.split(/\s+/);
		},

		sortedKeys(obj, key, sortmode) {
			if (obj == null || typeof(obj) != 'object')
				return [];
			return Object.keys(obj).map(function(e) {
				let v = (key != null) ? obj[e][key] : e;
				if (sortmode == 'num')
					v = (v != null) ? +v : null;
				return [ e, v ];
			}).filter(function(e) { return e[1] != null; }).sort(function(a, b) {
				return a[1] < b[1] ? -1 : (a[1] > b[1] ? 1 : 0);
			}).map(function(e) { return e[0]; });
		},

		naturalCompare: new Intl.Collator(undefined, { numeric: true }).compare,

		resolveDefault(value, defvalue) {
			return Promise.resolve(value).catch(function() { return defvalue; });
		},

		hasViewPermission() {
			return true;
		},

		hasSystemFeature() {
			return null;
		}
	});

	/* --- globals: E(), _(), String.prototype.format --------------------------- */

	window.E = function() {
		return DOM.create.apply(DOM, arguments);
	};

	// No catalogue is loaded: _() returns its argument, as LuCI does for untranslated strings.
	window._ = function(s) {
		return s;
	};
	window.N_ = function(n, s, p) {
		return n == 1 ? s : p;
	};

	const escapeHTML = function(s) {
		return String(s).replace(/&/g, '&#38;').replace(/"/g, '&#34;').replace(/'/g, '&#39;')
			.replace(/</g, '&#60;').replace(/>/g, '&#62;');
	};

	// %s %d %i %f %x %X %o %c %h %q %t %m %%, with flags, width and precision.
	String.prototype.format = function(...args) {
		const re = /%(?:([-+ 0]*)(\d*)(?:\.(\d+))?([sdifxXochqtm%]))/g;
		let n = 0;
		return String(this).replace(re, function(all, flags, width, precision, type) {
			if (type == '%')
				return '%';
			let value = args[n++];
			let s;
			switch (type) {
			case 'd':
			case 'i':
				s = String(Math.trunc(+value || 0));
				break;
			case 'f':
				s = (+value || 0).toFixed(precision != '' && precision != null ? +precision : 6);
				break;
			case 'x':
				s = (+value >>> 0).toString(16);
				break;
			case 'X':
				s = (+value >>> 0).toString(16).toUpperCase();
				break;
			case 'o':
				s = (+value >>> 0).toString(8);
				break;
			case 'c':
				s = String.fromCharCode(+value);
				break;
			case 'h':
				s = escapeHTML(value == null ? '' : value);
				break;
			case 'q':
				s = String(value == null ? '' : value).replace(/\\/g, '\\\\').replace(/"/g, '\\"');
				break;
			case 't': {
				let t = Math.floor(+value || 0), parts = [];
				if (t >= 86400) { parts.push(Math.floor(t / 86400) + 'd'); t %= 86400; }
				if (t >= 3600) { parts.push(Math.floor(t / 3600) + 'h'); t %= 3600; }
				if (t >= 60) { parts.push(Math.floor(t / 60) + 'm'); t %= 60; }
				parts.push(t + 's');
				s = parts.join(' ');
				break;
			}
			case 'm': {
				let v = +value || 0, units = [ '', 'K', 'M', 'G', 'T' ], i = 0;
				while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
				s = v.toFixed(precision != '' && precision != null ? +precision : 2) + ' ' + units[i];
				break;
			}
			default:
				s = (value == null) ? '' : String(value);
				if (precision != '' && precision != null)
					s = s.substring(0, +precision);
			}
			if (width != '' && s.length < +width) {
				const pad = (flags.indexOf('0') >= 0 && 'dif'.indexOf(type) >= 0) ? '0' : ' ';
				s = (flags.indexOf('-') >= 0) ? s + ' '.repeat(+width - s.length) : pad.repeat(+width - s.length) + s;
			}
			return s;
		});
	};

	window.LuCI = LuCI;
})(window, document);
