'use strict';
'require baseclass';

/*
 * LuCI's datatype expressions ("and(uinteger,range(1,65535))", "ipaddr(\"nomask\")",
 * "list(uciname)", ...) compiled into checks, with LuCI's documented meanings of the
 * types the loxgw views use and a few common ones. A check returns true, or the
 * "Expecting: ..." message LuCI shows.
 */

function ip4(value, nomask) {
	const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}))?$/.exec(value);
	if (!m || (nomask && m[5] != null))
		return false;
	for (let i = 1; i <= 4; i++)
		if (+m[i] > 255)
			return false;
	if (m[5] != null && m[5].indexOf('.') < 0 && +m[5] > 32)
		return false;
	return true;
}

function ip6(value, nomask) {
	const m = /^([0-9a-fA-F:.]+)(?:\/(\d{1,3}))?$/.exec(value);
	if (!m || (nomask && m[2] != null) || (m[2] != null && +m[2] > 128) || m[1].indexOf(':') < 0)
		return false;
	const addr = m[1];
	if ((addr.match(/::/g) || []).length > 1)
		return false;
	let groups = addr.split(':');
	const last = groups[groups.length - 1];
	let needed = 8;
	if (last.indexOf('.') >= 0) {
		if (!ip4(last, true))
			return false;
		groups = groups.slice(0, -1);
		needed = 6;
	}
	const filled = groups.filter(function(g) { return g !== ''; });
	if (filled.some(function(g) { return !/^[0-9a-fA-F]{1,4}$/.test(g); }))
		return false;
	return addr.indexOf('::') >= 0 ? filled.length < needed : filled.length == needed;
}

const TYPES = {
	string() { return true; },
	integer(v) { return /^-?[0-9]+$/.test(v) || _('valid integer value'); },
	uinteger(v) { return /^[0-9]+$/.test(v) || _('positive integer value'); },
	float(v) { return !isNaN(parseFloat(v)) && /^-?[0-9.]+$/.test(v) || _('valid decimal value'); },
	ufloat(v) { return /^[0-9.]+$/.test(v) && !isNaN(parseFloat(v)) || _('positive decimal value'); },
	range(v, min, max) {
		const n = parseFloat(v);
		return (!isNaN(n) && n >= +min && n <= +max) || _('value between %f and %f').format(min, max).replace(/\.0+\b/g, '');
	},
	min(v, min) { return (parseFloat(v) >= +min) || _('value greater or equal to %s').format(min); },
	max(v, max) { return (parseFloat(v) <= +max) || _('value smaller or equal to %s').format(max); },
	rangelength(v, min, max) { return (v.length >= +min && v.length <= +max) || _('value between %d and %d characters').format(min, max); },
	minlength(v, min) { return v.length >= +min || _('value with at least %d characters').format(min); },
	maxlength(v, max) { return v.length <= +max || _('value with at most %d characters').format(max); },
	ip4addr(v, nomask) { return ip4(v, nomask) || (nomask ? _('valid IPv4 address') : _('valid IPv4 address or network')); },
	ip6addr(v, nomask) { return ip6(v, nomask) || (nomask ? _('valid IPv6 address') : _('valid IPv6 address or prefix')); },
	ipaddr(v, nomask) { return ip4(v, nomask) || ip6(v, nomask) || (nomask ? _('valid IP address') : _('valid IP address or prefix')); },
	cidr4(v) { return (/\//.test(v) && ip4(v, false)) || _('valid IPv4 CIDR'); },
	cidr6(v) { return (/\//.test(v) && ip6(v, false)) || _('valid IPv6 CIDR'); },
	cidr(v) { return (/\//.test(v) && (ip4(v, false) || ip6(v, false))) || _('valid IPv4 or IPv6 CIDR'); },
	macaddr(v) { return /^([a-fA-F0-9]{2}:){5}[a-fA-F0-9]{2}$/.test(v) || _('valid MAC address'); },
	port(v) { return (/^[0-9]+$/.test(v) && +v <= 65535) || _('valid port value'); },
	portrange(v) {
		const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(v);
		if (m && +m[1] <= 65535 && (m[2] == null || (+m[2] <= 65535 && +m[1] <= +m[2])))
			return true;
		return _('valid port or port range (port1-port2)');
	},
	uciname(v) { return /^[a-zA-Z0-9_]+$/.test(v) || _('valid UCI identifier'); },
	hostname(v) { return (/^[a-zA-Z0-9_]([a-zA-Z0-9_.-]{0,252}[a-zA-Z0-9_])?$/.test(v)) || _('valid hostname'); }
};

// "and(uinteger,range(1,65535))" -> [ 'and', [ [ 'uinteger', [] ], [ 'range', [ 1, 65535 ] ] ] ]
function parse(code) {
	let pos = 0;
	function expr() {
		const m = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)/.exec(code.substring(pos));
		if (!m)
			throw new SyntaxError('Bad datatype: ' + code);
		pos += m[0].length;
		const args = [];
		if (code.charAt(pos) == '(') {
			pos++;
			while (code.charAt(pos) != ')') {
				const rest = code.substring(pos);
				let a;
				if ((a = /^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*/.exec(rest))) {
					args.push(+a[1]);
					pos += a[0].length;
				}
				else if ((a = /^\s*"((?:[^"\\]|\\.)*)"\s*|^\s*'((?:[^'\\]|\\.)*)'\s*/.exec(rest))) {
					args.push(a[1] != null ? a[1] : a[2]);
					pos += a[0].length;
				}
				else {
					args.push(expr());
				}
				if (code.charAt(pos) == ',')
					pos++;
				else if (code.charAt(pos) != ')')
					throw new SyntaxError('Bad datatype: ' + code);
			}
			pos++;
		}
		return [ m[1], args ];
	}
	const tree = expr();
	if (code.substring(pos).trim() !== '')
		throw new SyntaxError('Bad datatype: ' + code);
	return tree;
}

function check(tree, value) {
	const name = tree[0], args = tree[1];
	switch (name) {
	case 'and':
		for (let i = 0; i < args.length; i++) {
			const r = check(args[i], value);
			if (r !== true)
				return r;
		}
		return true;
	case 'or': {
		const wanted = [];
		for (let i = 0; i < args.length; i++) {
			const r = check(args[i], value);
			if (r === true)
				return true;
			wanted.push(r);
		}
		return wanted.join(_(' or '));
	}
	case 'neg':
		return check(args[0], String(value).replace(/^[ \t]*![ \t]*/, ''));
	case 'list': {
		const items = String(value).match(/[^ \t]+/g) || [];
		for (let i = 0; i < items.length; i++) {
			const r = check(args[0], items[i]);
			if (r !== true)
				return r;
		}
		return true;
	}
	default:
		if (!TYPES[name])
			throw new ReferenceError('Unknown datatype: ' + name);
		return TYPES[name].apply(null, [ String(value) ].concat(args));
	}
}

return baseclass.extend({
	types: TYPES,

	// A check for one datatype expression: value -> true or 'Expecting: ...'.
	compile(code) {
		const tree = parse(code);
		return function(value) {
			const r = check(tree, value);
			return r === true ? true : _('Expecting: %s').format(r);
		};
	}
});
