// Runs a ucode module written in the ucode/JavaScript common subset under node.
//
// ucode is not installable here, so the builtins the module calls are provided with
// ucode's documented semantics for the arguments it passes (https://ucode.mein.io/):
// functions, not methods; `type()` names; `json()` throws on bad input.

import { readFileSync } from 'node:fs';

const builtins = {
	type(value) {
		if (value === null || value === undefined)
			return null;
		if (Array.isArray(value))
			return 'array';
		switch (typeof value) {
		case 'boolean': return 'bool';
		case 'number': return Number.isInteger(value) ? 'int' : 'double';
		case 'string': return 'string';
		case 'function': return 'function';
		default: return 'object';
		}
	},
	length(value) {
		if (typeof value === 'string' || Array.isArray(value))
			return value.length;
		if (value !== null && typeof value === 'object')
			return Object.keys(value).length;
		return null;
	},
	push(array, ...values) {
		array.push(...values);
		return values.length ? values[values.length - 1] : null;
	},
	keys(object) {
		return (object !== null && typeof object === 'object' && !Array.isArray(object)) ? Object.keys(object) : null;
	},
	sort(array, compare) {
		return compare ? array.sort(compare) : array.sort();
	},
	slice(array, start, end) {
		return array.slice(start, end);
	},
	substr(string, offset, count) {
		return (count === undefined) ? string.substr(offset) : string.substr(offset, count);
	},
	index(haystack, needle) {
		if (typeof haystack === 'string' || Array.isArray(haystack))
			return haystack.indexOf(needle);
		return null;
	},
	rindex(haystack, needle) {
		if (typeof haystack === 'string' || Array.isArray(haystack))
			return haystack.lastIndexOf(needle);
		return null;
	},
	split(string, separator) {
		return String(string).split(separator);
	},
	join(separator, array) {
		return array.join(separator);
	},
	trim(string) {
		return String(string).trim();
	},
	lc(string) {
		return String(string).toLowerCase();
	},
	int(value) {
		const n = Math.trunc(Number(value));
		return Number.isNaN(n) ? NaN : n;
	},
	match(string, regexp) {
		const m = String(string).match(regexp);
		return m ? Array.from(m) : null;
	},
	json(text) {
		return JSON.parse(text);
	},
	min: Math.min,
	max: Math.max
};

export function installBuiltins() {
	Object.assign(globalThis, builtins);
}

// Import a .uc module by path; its exports as an object.
export async function loadModule(path) {
	installBuiltins();
	const source = readFileSync(path, 'utf-8');
	return import('data:text/javascript;base64,' + Buffer.from(source).toString('base64'));
}
