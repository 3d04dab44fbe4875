'use strict';
'require baseclass';
'require request';

/*
 * LuCI.rpc as documented: rpc.declare({ object, method, params, expect, filter, reject })
 * returns a function that sends a ubus JSON-RPC "call" and resolves with
 *   - the reply object, or a failed call's ubus status number (no `expect`);
 *   - with `expect: { key: default }`, reply[key] (or the whole reply for key ''),
 *     replaced by the default when missing or of another type;
 * and rejects on HTTP errors, on a JSON-RPC error object (e.g. -32002 Access denied),
 * and, with `reject: true`, on a non-zero ubus status.
 */

let requestId = 1;
const baseURL = '/ubus/';

return baseclass.extend({
	call(msg, cb) {
		return request.post(baseURL, msg, { timeout: (L.env.rpctimeout || 20) * 1000 }).then(cb, cb);
	},

	parseCallReply(req, res) {
		let msg;
		if (res instanceof Error)
			return req.reject(res);
		try {
			if (!res.ok)
				L.raise('RPCError', 'RPC call to %s/%s failed with HTTP error %d: %s',
					req.object, req.method, res.status, res.statusText || '?');
			msg = res.json();
		}
		catch (e) {
			return req.reject(e);
		}
		this.handleCallReply(req, msg);
	},

	handleCallReply(req, msg) {
		const type = Object.prototype.toString;
		let ret = null;
		try {
			if (!L.isObject(msg) || msg.jsonrpc != '2.0')
				L.raise('RPCError', 'RPC call to %s/%s returned invalid message frame', req.object, req.method);
			if (L.isObject(msg.error) && msg.error.code && msg.error.message)
				L.raise('RPCError', 'RPC call to %s/%s failed with error %d: %s',
					req.object, req.method, msg.error.code, msg.error.message || '?');
		}
		catch (e) {
			return req.reject(e);
		}
		if (!req.object && !req.method) {
			ret = msg.result;
		}
		else if (Array.isArray(msg.result)) {
			if (req.raise && msg.result[0] !== 0)
				return req.reject(new Error('RPC call to %s/%s failed with ubus code %d: %s'.format(
					req.object, req.method, msg.result[0], this.getStatusText(msg.result[0]))));
			ret = (msg.result.length > 1) ? msg.result[1] : msg.result[0];
		}
		if (req.expect) {
			for (const key in req.expect) {
				if (ret != null && key != '')
					ret = ret[key];
				if (ret == null || type.call(ret) != type.call(req.expect[key]))
					ret = req.expect[key];
				break;
			}
		}
		if (typeof(req.filter) == 'function') {
			req.priv[0] = ret;
			req.priv[1] = req.params;
			ret = req.filter.apply(this, req.priv);
		}
		req.resolve(ret);
	},

	list(...objects) {
		const msg = { jsonrpc: '2.0', id: requestId++, method: 'list', params: objects.length ? objects : undefined };
		return new Promise(L.bind(function(resolve, reject) {
			this.call(msg, this.parseCallReply.bind(this, { resolve: resolve, reject: reject }));
		}, this));
	},

	declare(options) {
		const rpc = this;
		return function(...args) {
			return new Promise(function(resolve, reject) {
				const params = {};
				let i = 0;
				if (Array.isArray(options.params))
					for (; i < options.params.length; i++)
						params[options.params[i]] = args[i];
				const priv = [ undefined, undefined ].concat(args.slice(i));
				const req = {
					expect: options.expect, filter: options.filter, resolve: resolve, reject: reject,
					params: params, priv: priv, object: options.object, method: options.method, raise: options.reject
				};
				const msg = {
					jsonrpc: '2.0', id: requestId++, method: 'call',
					params: [ L.env.sessionid || '00000000000000000000000000000000', options.object, options.method, params ]
				};
				rpc.call(msg, rpc.parseCallReply.bind(rpc, req));
			});
		};
	},

	getSessionID() {
		return L.env.sessionid;
	},

	getBaseURL() {
		return baseURL;
	},

	getStatusText(code) {
		switch (code) {
		case 0: return _('Command OK');
		case 1: return _('Invalid command');
		case 2: return _('Invalid argument');
		case 3: return _('Method not found');
		case 4: return _('Resource not found');
		case 5: return _('No data received');
		case 6: return _('Permission denied');
		case 7: return _('Request timeout');
		case 8: return _('Not supported');
		case 9: return _('Unspecified error');
		case 10: return _('Connection lost');
		default: return _('Unknown error code');
		}
	},

	addInterceptor(fn) {
		return fn;
	}
});
