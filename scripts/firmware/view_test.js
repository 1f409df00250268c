// Runs the LuCI view and its Status > Overview panel under node with small
// stand-ins for LuCI's classes (no browser here), on replies shaped as the
// rpcd plugin gives them, and checks what a user would see: status in
// words (no raw keys, no true/false), buttons disabled for a read-only
// user, Pause asking first, Drop sending the call's key, and a refresh
// after each button. The box (scripts/openwrt-box) runs the page in
// Chromium against the real LuCI.
//
//   node scripts/firmware/view_test.js
'use strict';
const fs = require('fs');
const path = require('path');
const assert = require('assert');

const root = path.join(__dirname, '../../firmware/luci-app-pptp-alg/htdocs/luci-static/resources/view');

// --- stand-ins ---------------------------------------------------------------

function E(tag, attrs, children) {
	if (Array.isArray(tag)) // E([], children): a fragment
		return { tag: '#fragment', attrs: {}, children: flat(attrs) };
	if (attrs != null && (typeof attrs != 'object' || Array.isArray(attrs) || attrs.tag)) {
		children = attrs;
		attrs = {};
	}
	const el = { tag, attrs: attrs || {}, children: flat(children), disabled: !!(attrs && attrs.disabled) };
	const classes = new Set();
	el.classList = { add: (c) => classes.add(c), remove: (c) => classes.delete(c) };
	return el;
}
function flat(c) {
	if (c == null) return [];
	return (Array.isArray(c) ? c : [ c ]).filter((x) => x != null && x !== '');
}

// The text a user reads in a node, with table data and text content.
function text(n) {
	if (n == null) return '';
	if (typeof n != 'object') return String(n);
	let s = n.textContent != null ? String(n.textContent) : '';
	for (const c of n.children || []) s += ' ' + text(c);
	for (const row of n.rows || []) for (const cell of row) s += ' ' + text(cell);
	if (n.placeholder) s += ' ' + text(n.placeholder);
	return s;
}

function find(n, pred, out = []) {
	if (n && typeof n == 'object') {
		if (pred(n)) out.push(n);
		for (const c of n.children || []) find(c, pred, out);
		for (const row of n.rows || []) for (const cell of row) find(cell, pred, out);
	}
	return out;
}
const buttons = (n, label) => find(n, (x) => x.tag == 'button' && text(x).trim() == label);

String.prototype.format = function(...args) {
	let i = 0;
	return this.replace(/%(1024\.2mB|[dst])/g, (m, f) => {
		const v = args[i++];
		if (f == 'd') return String(Math.floor(v));
		if (f == 't') return v + 's';
		if (f == '1024.2mB') return v + ' B';
		return String(v);
	});
};

function harness(replies, opts) {
	const calls = [];
	let modal = null;
	const L = {
		bind: (fn, ctx, ...a) => fn.bind(ctx, ...a),
		resolveDefault: (p, d) => Promise.resolve(p).catch(() => d),
		hasViewPermission: () => opts.writable,
		dom: { content: (node, children) => { node.children = flat(children); } }
	};
	const rpc = {
		declare: (d) => (...args) => {
			calls.push([ d.method, ...args ]);
			const r = replies[d.method];
			return Promise.resolve(typeof r == 'function' ? r(...args) : r);
		}
	};
	const option = () => ({});
	const form = {
		Map: function(config, title, descr) {
			this.title = title;
			this.section = () => ({ option });
			this.render = () => Promise.resolve(E('div', { 'class': 'cbi-map' }, [ title, descr ]));
		},
		NamedSection: 'NamedSection', Flag: 'Flag', Value: 'Value'
	};
	const ui = {
		createHandlerFn: (ctx, name, ...a) => () => ctx[name](...a),
		showModal: (title, children) => { modal = { title, children: flat(children) }; },
		hideModal: () => { modal = null; },
		addNotification: (t, el, cls) => calls.push([ 'notify', cls, text(el) ])
	};
	const uci = { load: () => Promise.resolve(), get: (c, s, o) => opts.uciEnabled };
	const env = {
		E, L, rpc, form, ui, uci, _: (s) => s, N_: (n, one, many) => (n == 1 ? one : many),
		view: { extend: (o) => o }, baseclass: { extend: (o) => o },
		poll: { add: () => {} }, widgets: { NetworkSelect: 'NetworkSelect' },
		cbi_update_table: (table, rows, placeholder) => { table.rows = rows; table.placeholder = rows.length ? null : placeholder; }
	};
	const load = (file) => {
		const src = fs.readFileSync(path.join(root, file), 'utf8');
		return new Function(...Object.keys(env), src)(...Object.values(env));
	};
	return { load, calls, replies, modal: () => modal };
}

// --- replies -------------------------------------------------------------------

const daemon = {
	version: '0.1.0-r2', enabled: true, lan: [ 'br-lan', 'br-guest' ], wan: 'wan', wan_addr: '203.0.113.1',
	relay_port: 1724, table: 'pptp_alg', fast_path: false, fast_path_off: 'LAN br-guest: no such device',
	control_connections: 2, calls: 3, kernel_features: [ 'nftables' ],
	kernel_pptp_helper: [ { where: 'inet fw4 chain helper_lan (prerouting priority 0)', sees_relayed_connections: false, fix: 'set auto_helper 0' } ]
};
const mapping = (i) => ({
	client: '192.168.1.' + (10 + i), client_call_id: 7, server: '198.51.100.9', server_call_id: 40000 + i,
	nat_call_id: i + 1, established: i % 2 == 0, packets_in: 5, packets_out: 6, bytes_in: 500, bytes_out: 600,
	since: new Date(Date.now() - 65000).toISOString()
});
const page = (offset, limit) => {
	const all = Array.from({ length: 120 }, (_, i) => mapping(i));
	return { total: all.length, offset, mappings: all.slice(offset, offset + limit) };
};
const running = {
	status: { running: true, boot: true, daemon },
	mappings: page,
	log: { lines: [ 'Dec  6 01:00:00 daemon.info pptp-alg[1]: msg="pptp-alg ready"' ] },
	doctor: { checks: [ { ok: true, text: 'nftables: the ruleset is readable', fix: '' }, { ok: false, text: 'kernel PPTP helper: assigned', fix: 'set auto_helper 0' } ] },
	disable: { ok: true, message: 'pptp-alg: disabled' }, enable: { ok: true, message: 'pptp-alg: enabled' },
	drop: { ok: true, message: 'pptp-alg: dropped' }, service: { ok: true, message: '' }
};
const stopped = Object.assign({}, running, { status: { running: false, boot: true, error: 'cannot reach the daemon' }, mappings: { total: 0, offset: 0, mappings: [], error: 'cannot reach the daemon' } });

// Words a user must never see: JSON keys, booleans, holes.
const raw = /\b(true|false|undefined|null|NaN|wan_addr|fast_path|kernel_pptp_helper|control_connections|nat_call_id|\[object Object\])\b/;

async function renderView(replies, opts) {
	const h = harness(replies, opts);
	const v = h.load('pptp-alg.js');
	const data = await v.load();
	const el = await v.render(data);
	return { h, v, el };
}

(async function() {
	let checks = 0;

	// A running daemon, for a user who may write.
	{
		const { h, v, el } = await renderView(Object.assign({}, running), { writable: true, uciEnabled: '1' });
		const t = text(el);
		assert(!raw.test(t), 'raw words on the page: ' + t.match(raw));
		for (const want of [ 'Running, version 0.1.0-r2', 'Active: PPTP from the LAN is translated', 'br-lan, br-guest',
			'wan, address 203.0.113.1', '2 control connections, 3 calls', 'Off: LAN br-guest: no such device',
			'Assigned in inet fw4 chain helper_lan', 'Calls 1 to 50 of 120', 'pptp-alg ready', 'Starts at boot', 'Yes' ])
			assert(t.includes(want), 'page lacks "' + want + '"');
		assert.equal(v.callsTable.rows.length, 50, 'a page holds 50 calls');
		assert(!v.buttons.stop.disabled && !v.buttons.restart.disabled && !v.buttons.pause.disabled, 'Stop, Restart and Pause enabled while running');
		assert(v.buttons.start.disabled && v.buttons.resume.disabled, 'Start and Resume off while running and translating');
		checks++;

		// Next page, then Drop one call: it asks, then sends the call's key, then refreshes.
		await v.handlePage(1);
		assert(text(v.pageInfo).includes('Calls 51 to 100 of 120'), 'second page: ' + text(v.pageInfo));
		const drop = find(v.callsTable, (x) => x.tag == 'button')[0];
		assert(!drop.disabled, 'Drop enabled');
		const before = h.calls.filter((c) => c[0] == 'status').length;
		const done = v.handleDrop(v.callsTable.rows[0] && { client: '192.168.1.60', server: '198.51.100.9', nat_call_id: 51 });
		assert(h.modal() && /Drop this call/.test(h.modal().title), 'Drop asks first');
		buttons({ children: h.modal().children }, 'Drop')[0].attrs.click();
		await done;
		assert(h.calls.some((c) => c[0] == 'drop' && c[1] == '198.51.100.9' && c[2] == 51), 'drop sent the key: ' + JSON.stringify(h.calls));
		assert(h.calls.filter((c) => c[0] == 'status').length > before, 'status refreshed after Drop');
		checks++;

		// Pause asks, says what it does, and refreshes after.
		const n = h.calls.filter((c) => c[0] == 'status').length;
		const p = v.handlePause();
		const m = h.modal();
		assert(m && text({ children: m.children }).includes('ends the 3 calls it carries'), 'Pause explains: ' + text({ children: m.children }));
		assert(!h.calls.some((c) => c[0] == 'disable'), 'nothing paused before the confirmation');
		buttons({ children: m.children }, 'Pause')[0].attrs.click();
		await p;
		assert(h.calls.some((c) => c[0] == 'disable'), 'Pause sent disable');
		assert(h.calls.filter((c) => c[0] == 'status').length > n, 'status refreshed after Pause');
		h.replies.status = { running: true, boot: true, daemon: Object.assign({}, daemon, { enabled: false, fast_path: false, fast_path_off: '', wan_addr: '' }) };
		await v.refresh();
		const paused = text(v.statusTable);
		assert(paused.includes('Paused: PPTP passes untranslated') && paused.includes('Off while paused') && paused.includes('wan, no address in use'), paused);
		assert(v.buttons.pause.disabled && !v.buttons.resume.disabled && !v.buttons.stop.disabled, 'paused: Resume and Stop, not Pause');
		h.replies.status = running.status;
		await v.buttons.restart.attrs.click();
		assert(h.calls.some((c) => c[0] == 'service' && c[1] == 'restart'), 'Restart sent service restart');
		assert(!v.buttons.restart.disabled, 'Restart enabled again while running');

		// Stop: the service stops, and the buttons follow the new state.
		h.replies.status = stopped.status;
		await v.buttons.stop.attrs.click();
		assert(h.calls.some((c) => c[0] == 'service' && c[1] == 'stop'), 'Stop sent service stop');
		assert(v.buttons.stop.disabled && v.buttons.pause.disabled && !v.buttons.start.disabled, 'after Stop only Start is enabled');
		assert(text(v.statusTable).includes('Stopped'), 'status says Stopped at once after Stop');

		await v.handleDoctor();
		const dt = text(v.doctorTable);
		assert(dt.includes('Problem') && dt.includes('Fix: set auto_helper 0') && !raw.test(dt), 'doctor table: ' + dt);
		checks++;
	}

	// A read-only user: the same page, every write button disabled.
	{
		const { el, v } = await renderView(running, { writable: false, uciEnabled: '1' });
		for (const b of Object.values(v.buttons))
			assert(b.disabled, 'a write button is enabled for a read-only user');
		for (const b of find(v.callsTable, (x) => x.tag == 'button'))
			assert(b.disabled, 'Drop is enabled for a read-only user');
		assert(text(el).includes('Calls 1 to 50 of 120'), 'read-only user sees the calls');
		checks++;
	}

	// Stopped, and not enabled in the settings.
	{
		const { el, v } = await renderView(stopped, { writable: true, uciEnabled: '0' });
		const t = text(el);
		assert(t.includes('Stopped: not enabled in the settings below') && t.includes('cannot reach the daemon'), t);
		assert(!raw.test(t), 'raw words on the stopped page: ' + t.match(raw));
		assert(!v.buttons.start.disabled && v.buttons.stop.disabled && v.buttons.pause.disabled, 'stopped: only Start');
		checks++;
	}

	// The Status > Overview panel.
	{
		const h = harness(running, { writable: true });
		const inc = h.load('status/include/75_pptp-alg.js');
		const t = text(inc.render(await inc.load()));
		assert(t.includes('Running, translating PPTP') && t.includes('2 control connections, 3 calls') && !raw.test(t), t);
		const hs = harness(stopped, { writable: true });
		const incs = hs.load('status/include/75_pptp-alg.js');
		assert(text(incs.render(await incs.load())).includes('Stopped'));
		const hn = harness({ status: Promise.reject(new Error('Access denied')) }, { writable: false });
		const incn = hn.load('status/include/75_pptp-alg.js');
		assert.equal(incn.render(await incn.load()), null, 'no panel without the ACL');
		checks++;
	}
	console.log('view_test: ' + checks + ' groups of checks passed');
})().catch((e) => { console.error('view_test: ' + (e.stack || e)); process.exit(1); });
