// The rpcd plugin's logic module under node: one JSON request per stdin line, one JSON
// answer per stdout line. Requests: {"fn": "overview"|"dnsGroups"|"checkReport"|"statusFile"|
// "summary", "args": [...]}. Answers: {"result": ...} or {"error": "..."}.
//
// Usage: node plugin.mjs /path/to/luci.uc

import { createInterface } from 'node:readline';
import { loadModule } from './ucode.mjs';

const mod = await loadModule(process.argv[2]);
const lines = createInterface({ input: process.stdin });

for await (const line of lines) {
	if (!line.trim())
		continue;
	let answer;
	try {
		const request = JSON.parse(line);
		if (typeof mod[request.fn] !== 'function')
			throw new Error(`no function ${request.fn}`);
		answer = { result: mod[request.fn](...request.args) };
	}
	catch (e) {
		answer = { error: String(e && e.stack || e) };
	}
	process.stdout.write(JSON.stringify(answer) + '\n');
}
