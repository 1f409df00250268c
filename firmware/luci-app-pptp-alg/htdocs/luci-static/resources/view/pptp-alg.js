'use strict';
'require view';
'require form';
'require rpc';
'require poll';
'require ui';
'require uci';
'require tools.widgets as widgets';

// Network > VPN Passthrough: the pptp-alg settings (UCI), the service and
// its state in words, the calls it carries (a page at a time, each with a
// Drop button), what `pptp-alg doctor` finds and the daemon's recent log.
// Everything comes from the rpcd plugin luci.pptp-alg
// (/usr/libexec/rpcd/luci.pptp-alg). A user with the app's read ACL only
// sees it all with the buttons disabled.

const callStatus = rpc.declare({ object: 'luci.pptp-alg', method: 'status' });

// carrying says how many control connections and calls, in words.
function carrying(d) {
	const conns = d.control_connections || 0, calls = d.calls || 0;
	return '%s, %s'.format(N_(conns, '%d control connection', '%d control connections').format(conns),
		N_(calls, '%d call', '%d calls').format(calls));
}
const callMappings = rpc.declare({ object: 'luci.pptp-alg', method: 'mappings', params: [ 'offset', 'limit' ] });
const callDoctor = rpc.declare({ object: 'luci.pptp-alg', method: 'doctor' });
const callLog = rpc.declare({ object: 'luci.pptp-alg', method: 'log' });
const callEnable = rpc.declare({ object: 'luci.pptp-alg', method: 'enable' });
const callDisable = rpc.declare({ object: 'luci.pptp-alg', method: 'disable' });
const callDrop = rpc.declare({ object: 'luci.pptp-alg', method: 'drop', params: [ 'server', 'nat_call_id' ] });
const callService = rpc.declare({ object: 'luci.pptp-alg', method: 'service', params: [ 'action' ] });

const POLL_SECONDS = 5;
const PAGE_SIZE = 50;

function age(since) {
	const t = Date.parse(since);
	if (isNaN(t))
		return '-';
	return '%t'.format(Math.max(0, Math.floor((Date.now() - t) / 1000)));
}

function traffic(packets, bytes) {
	return _('%d packets, %s').format(packets || 0, '%1024.2mB'.format(bytes || 0));
}

// statusRows puts the status reply in words, one [label, value] a row.
function statusRows(reply) {
	const rows = [];
	if (!reply || !reply.running) {
		rows.push([ _('Service'), uci.get('pptp-alg', 'main', 'enabled') == '1'
			? _('Stopped') : _('Stopped: not enabled in the settings below') ]);
		if (reply && reply.error)
			rows.push([ _('Reason'), reply.error ]);
		return rows;
	}
	const d = reply.daemon || {};
	rows.push([ _('Service'), d.version ? _('Running, version %s').format(d.version) : _('Running') ]);
	rows.push([ _('Translation'), d.enabled ? _('Active: PPTP from the LAN is translated')
		: _('Paused: PPTP passes untranslated until you resume or the service restarts') ]);
	rows.push([ _('LAN interfaces'), (d.lan || []).join(', ') || '-' ]);
	rows.push([ _('WAN interface'), d.wan_addr ? _('%s, address %s').format(d.wan, d.wan_addr) : _('%s, no address in use').format(d.wan) ]);
	rows.push([ _('Carrying'), carrying(d) ]);
	if (d.fast_path)
		rows.push([ _('GRE fast path'), _('On: known calls are forwarded from the interfaces\' ingress') ]);
	else if (!d.enabled)
		rows.push([ _('GRE fast path'), _('Off while paused') ]);
	else
		rows.push([ _('GRE fast path'), d.fast_path_off ? _('Off: %s').format(d.fast_path_off) : _('Off') ]);
	const helpers = d.kernel_pptp_helper || [];
	if (d.ruleset_error)
		rows.push([ _('Kernel PPTP helper'), _('Unknown: %s').format(d.ruleset_error) ]);
	else if (!helpers.length)
		rows.push([ _('Kernel PPTP helper'), _('Not assigned by any rule') ]);
	else
		helpers.forEach(function(h) {
			rows.push([ _('Kernel PPTP helper'), E([], [
				_('Assigned in %s').format(h.where), E('br'),
				h.sees_relayed_connections ? _('It can land on relayed connections, which then fail.')
					: _('It never sees the connections pptp-alg relays: relayed tunnels work.'),
				E('br'), _('Fix: %s').format(h.fix)
			]) ]);
		});
	rows.push([ _('Starts at boot'), reply.boot ? _('Yes') : _('No') ]);
	return rows;
}

function fillTable(table, rows, empty) {
	cbi_update_table(table, rows, E('em', {}, empty));
}

// fillPairs shows [label, value] rows in a two-column table.
function fillPairs(table, rows) {
	L.dom.content(table, rows.map(function(r) {
		return E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td left', 'width': '33%' }, r[0]),
			E('td', { 'class': 'td left' }, r[1])
		]);
	}));
}

return view.extend({
	offset: 0,
	status: null,

	load: function() {
		return Promise.all([
			uci.load('pptp-alg'),
			L.resolveDefault(callStatus(), { running: false, error: _('No answer from rpcd') }),
			L.resolveDefault(callMappings(0, PAGE_SIZE), { total: 0, offset: 0, mappings: [] }),
			L.resolveDefault(callLog(), { lines: [] })
		]);
	},

	// refresh reads the state again and shows it; every button ends with it.
	refresh: function() {
		return Promise.all([
			L.resolveDefault(callStatus(), { running: false, error: _('No answer from rpcd') }),
			L.resolveDefault(callMappings(this.offset, PAGE_SIZE), { total: 0, offset: 0, mappings: [] }),
			L.resolveDefault(callLog(), { lines: [] })
		]).then(L.bind(function(r) {
			this.showStatus(r[0]);
			this.showMappings(r[1]);
			this.showLog(r[2]);
		}, this));
	},

	// notify shows a write method's reply and refreshes the status.
	notify: function(res) {
		if (!res || !res.ok)
			ui.addNotification(null, E('p', {}, (res && res.error) || _('The action failed.')), 'danger');
		else if (res.message)
			ui.addNotification(null, E('p', {}, res.message), 'info');
		return this.refresh();
	},

	handleService: function(action) {
		return callService(action).then(L.bind(this.notify, this));
	},

	handleResume: function() {
		return callEnable().then(L.bind(this.notify, this));
	},

	handlePause: function() {
		const calls = (this.status && this.status.daemon && this.status.daemon.calls) || 0;
		return new Promise(L.bind(function(resolve) {
			ui.showModal(_('Pause PPTP passthrough?'), [
				E('p', {}, _('Pausing removes pptp-alg\'s firewall rules at once and ends the %d calls it carries. Until you resume, or the service restarts, PPTP from the LAN passes untranslated: at most one client per server can then hold a tunnel. The Enable setting is not changed.').format(calls)),
				E('div', { 'class': 'right' }, [
					E('button', { 'class': 'btn', 'click': function() { ui.hideModal(); resolve(); } }, _('Cancel')),
					' ',
					E('button', {
						'class': 'btn cbi-button-negative',
						'click': L.bind(function() {
							ui.hideModal();
							callDisable().then(L.bind(this.notify, this)).then(resolve, resolve);
						}, this)
					}, _('Pause'))
				])
			]);
		}, this));
	},

	handleDrop: function(m) {
		return new Promise(L.bind(function(resolve) {
			ui.showModal(_('Drop this call?'), [
				E('p', {}, _('The call of %s to %s ends: pptp-alg closes its control connection to both, and the client\'s VPN software may dial again.').format(m.client, m.server)),
				E('div', { 'class': 'right' }, [
					E('button', { 'class': 'btn', 'click': function() { ui.hideModal(); resolve(); } }, _('Cancel')),
					' ',
					E('button', {
						'class': 'btn cbi-button-negative',
						'click': L.bind(function() {
							ui.hideModal();
							callDrop(m.server, m.nat_call_id).then(L.bind(this.notify, this)).then(resolve, resolve);
						}, this)
					}, _('Drop'))
				])
			]);
		}, this));
	},

	handleDoctor: function() {
		return L.resolveDefault(callDoctor(), { checks: [] }).then(L.bind(function(res) {
			const rows = (res.checks || []).map(function(c) {
				return [
					c.ok ? _('OK') : E('strong', {}, _('Problem')),
					c.text,
					c.fix ? _('Fix: %s').format(c.fix) : ''
				];
			});
			fillTable(this.doctorTable, rows, _('No checks ran: the daemon\'s binary did not answer.'));
		}, this));
	},

	handlePage: function(delta) {
		this.offset = Math.max(0, this.offset + delta * PAGE_SIZE);
		return L.resolveDefault(callMappings(this.offset, PAGE_SIZE), { total: 0, offset: 0, mappings: [] })
			.then(L.bind(this.showMappings, this));
	},

	showStatus: function(reply) {
		this.status = reply;
		fillPairs(this.statusTable, statusRows(reply));
		this.showButtons();
	},

	// showButtons enables the buttons that make sense now, none for a
	// read-only user.
	showButtons: function() {
		const reply = this.status;
		const running = !!(reply && reply.running);
		const translating = running && !!(reply.daemon && reply.daemon.enabled);
		const writable = this.writable;
		this.buttons.start.disabled = !writable || running;
		this.buttons.stop.disabled = !writable || !running;
		this.buttons.restart.disabled = !writable || !running;
		this.buttons.pause.disabled = !writable || !translating;
		this.buttons.resume.disabled = !writable || !running || translating;
	},

	showMappings: function(page) {
		const ms = page.mappings || [];
		const total = page.total || 0;
		if (ms.length == 0 && total > 0 && this.offset > 0) {
			// The calls of this page ended: go back to the last page.
			this.offset = Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);
			return this.handlePage(0);
		}
		const writable = this.writable;
		const rows = ms.map(L.bind(function(m) {
			return [
				m.client,
				m.client_call_id,
				m.server,
				m.server_call_id,
				m.nat_call_id,
				m.established ? _('Up') : _('Dialing'),
				traffic(m.packets_out, m.bytes_out),
				traffic(m.packets_in, m.bytes_in),
				age(m.since),
				E('button', {
					'class': 'btn cbi-button-remove',
					'disabled': !writable || null,
					'click': ui.createHandlerFn(this, 'handleDrop', m)
				}, _('Drop'))
			];
		}, this));
		fillTable(this.callsTable, rows, page.error ? _('Not available: %s').format(page.error) : _('No active PPTP calls'));
		this.pageInfo.textContent = total
			? _('Calls %d to %d of %d').format(this.offset + 1, this.offset + ms.length, total)
			: _('No calls');
		this.prev.disabled = this.offset == 0;
		this.next.disabled = this.offset + ms.length >= total;
	},

	showLog: function(reply) {
		const lines = reply.lines || [];
		this.logView.textContent = lines.length ? lines.join('\n') : _('No log lines of pptp-alg.');
	},

	render: function(data) {
		this.writable = L.hasViewPermission() === true;
		const th = function(text) { return E('th', { 'class': 'th' }, text); };
		this.statusTable = E('table', { 'class': 'table' });
		this.callsTable = E('table', { 'class': 'table' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				th(_('LAN client')), th(_('Call ID')), th(_('Server')), th(_('Server call ID')),
				th(_('NAT call ID')), th(_('State')), th(_('GRE out')), th(_('GRE in')), th(_('Age')), th('')
			])
		]);
		this.doctorTable = E('table', { 'class': 'table' }, [
			E('tr', { 'class': 'tr table-titles' }, [ th(_('Result')), th(_('Check')), th(_('What to do')) ])
		]);
		this.logView = E('pre', { 'style': 'white-space:pre-wrap; max-height:20em; overflow-y:auto' });
		this.pageInfo = E('span');
		this.prev = E('button', { 'class': 'btn', 'click': ui.createHandlerFn(this, 'handlePage', -1) }, _('Previous'));
		this.next = E('button', { 'class': 'btn', 'click': ui.createHandlerFn(this, 'handlePage', 1) }, _('Next'));
		// Not ui.createHandlerFn: it enables the button again when done,
		// whatever the new state says.
		const button = L.bind(function(cls, label, handler, arg) {
			const btn = E('button', { 'class': 'btn ' + cls, 'click': L.bind(function() {
				btn.disabled = true;
				btn.classList.add('spinning');
				return Promise.resolve(this[handler](arg)).finally(L.bind(function() {
					btn.classList.remove('spinning');
					this.showButtons();
				}, this));
			}, this) }, label);
			return btn;
		}, this);
		this.buttons = {
			start: button('cbi-button-positive', _('Start'), 'handleService', 'start'),
			stop: button('cbi-button-negative', _('Stop'), 'handleService', 'stop'),
			restart: button('cbi-button-action', _('Restart'), 'handleService', 'restart'),
			pause: button('cbi-button-negative', _('Pause'), 'handlePause'),
			resume: button('cbi-button-positive', _('Resume'), 'handleResume')
		};

		this.showStatus(data[1]);
		this.showMappings(data[2]);
		this.showLog(data[3]);
		poll.add(L.bind(this.refresh, this), POLL_SECONDS);

		const m = new form.Map('pptp-alg', _('VPN Passthrough'),
			_('Lets any number of LAN hosts hold PPTP VPN tunnels at once, to one server or many, even when their call IDs collide.'));
		const s = m.section(form.NamedSection, 'main', 'pptp-alg', _('Settings'));
		s.addremove = false;

		let o = s.option(form.Flag, 'enabled', _('Enable PPTP passthrough'));
		o.rmempty = false;

		o = s.option(widgets.NetworkSelect, 'lan', _('LAN networks'),
			_('PPTP clients in these networks are served. A network that goes down and up does not disturb the others\' calls.'));
		o.multiple = true;
		o.nocreate = true;
		o.rmempty = false;

		o = s.option(widgets.NetworkSelect, 'wan', _('WAN network'),
			_('Tunnels leave from the first IPv4 address of this network.'));
		o.nocreate = true;
		o.rmempty = false;

		o = s.option(form.Value, 'max_conns_per_client', _('Control connections per LAN host'));
		o.datatype = 'and(uinteger,range(1,65535))';
		o.placeholder = '16';

		o = s.option(form.Value, 'max_calls_per_client', _('Calls per LAN host'));
		o.datatype = 'and(uinteger,range(1,65535))';
		o.placeholder = '64';

		o = s.option(form.Value, 'max_calls', _('Calls in all'));
		o.datatype = 'and(uinteger,range(1,65535))';
		o.placeholder = '16384';

		o = s.option(form.Value, 'idle_timeout', _('Idle timeout (seconds)'),
			_('A call whose GRE has been silent this long is released.'));
		o.datatype = 'and(uinteger,min(1))';
		o.placeholder = '300';

		o = s.option(form.Flag, 'fast_path', _('GRE fast path'),
			_('Forward the GRE of known calls straight from the interfaces, past routing and the firewall\'s chains. Off: through the firewall, as other traffic.'));
		o.default = '1';

		const b = this.buttons;
		return m.render().then(L.bind(function(mapEl) {
			return E([], [
				mapEl,
				E('div', { 'class': 'cbi-section' }, [
					E('h3', {}, _('Status')),
					this.statusTable,
					E('div', { 'class': 'cbi-page-actions' }, [
						b.start, ' ', b.stop, ' ', b.restart, ' ', b.pause, ' ', b.resume
					]),
					E('p', {}, _('Pause stops translating without stopping the service, until Resume or a restart; Stop ends the service until Start or the next boot.'))
				]),
				E('div', { 'class': 'cbi-section' }, [
					E('h3', {}, _('Active calls')),
					E('p', {}, [ this.pageInfo, ' ', this.prev, ' ', this.next, ' ',
						E('em', {}, _('Refreshed every %d seconds.').format(POLL_SECONDS)) ]),
					this.callsTable
				]),
				E('div', { 'class': 'cbi-section' }, [
					E('h3', {}, _('Checks')),
					E('p', {}, [
						_('What a working passthrough needs, checked on this router (pptp-alg doctor).'), ' ',
						E('button', { 'class': 'btn cbi-button-action', 'click': ui.createHandlerFn(this, 'handleDoctor') }, _('Run checks'))
					]),
					this.doctorTable
				]),
				E('div', { 'class': 'cbi-section' }, [
					E('h3', {}, _('Recent log')),
					this.logView
				])
			]);
		}, this));
	}
});
