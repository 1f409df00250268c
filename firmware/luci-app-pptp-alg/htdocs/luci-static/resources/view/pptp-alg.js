'use strict';
'require view';
'require form';
'require rpc';
'require poll';
'require ui';
'require uci';
'require tools.widgets as widgets';

// Network > VPN Passthrough: the pptp-alg settings (UCI), its state, and a
// live table of the calls it carries, polled from the rpcd plugin
// luci.pptp-alg (/usr/libexec/rpcd/luci.pptp-alg).

const callStatus = rpc.declare({ object: 'luci.pptp-alg', method: 'status' });
const callMappings = rpc.declare({ object: 'luci.pptp-alg', method: 'mappings' });
const callEnable = rpc.declare({ object: 'luci.pptp-alg', method: 'enable' });
const callDisable = rpc.declare({ object: 'luci.pptp-alg', method: 'disable' });

const POLL_SECONDS = 5;

function age(since) {
	const t = Date.parse(since);
	if (isNaN(t))
		return '-';
	const s = Math.max(0, Math.floor((Date.now() - t) / 1000));
	return '%t'.format(s);
}

function bytes(n) {
	return '%1024.2mB'.format(n || 0);
}

// The table's rows for one `mappings` reply.
function mappingRows(reply) {
	return (reply.mappings || []).map(function(m) {
		return [
			m.client,
			m.client_call_id,
			m.server,
			m.server_call_id,
			m.nat_call_id,
			m.established ? _('up') : _('dialing'),
			'%d / %s'.format(m.packets_out || 0, bytes(m.bytes_out)),
			'%d / %s'.format(m.packets_in || 0, bytes(m.bytes_in)),
			age(m.since)
		];
	});
}

// The status reply (`pptp-alg status --json`) is shown as it comes, so
// fields the CLI adds later appear without a change here.
function statusRows(reply) {
	if (reply.error)
		return [ [ _('Daemon'), _('not running') ], [ _('Error'), reply.error ] ];
	const rows = [ [ _('Daemon'), reply.enabled ? _('running, translating PPTP') :
		_('running, translation disabled (PPTP passes untranslated)') ] ];
	Object.keys(reply).sort().forEach(function(k) {
		let v = reply[k];
		if (k === 'enabled' || v === null || v === undefined)
			return;
		if (k === 'kernel_pptp_helper')
			v = v.length ? v.map(function(h) { return h.where + (h.fix ? ' (' + h.fix + ')' : ''); }).join('; ') : _('not assigned');
		else if (Array.isArray(v))
			v = v.join(', ');
		else if (typeof v === 'object')
			v = JSON.stringify(v);
		rows.push([ k.replace(/_/g, ' '), String(v) ]);
	});
	return rows;
}

function fillTable(table, rows, empty) {
	cbi_update_table(table, rows, E('em', {}, empty));
}

return view.extend({
	load: function() {
		return Promise.all([
			uci.load('pptp-alg'),
			L.resolveDefault(callStatus(), { error: _('no answer from rpcd') }),
			L.resolveDefault(callMappings(), { mappings: [] })
		]);
	},

	// Switches the running daemon, until it restarts; the Enable option
	// above is what persists.
	toggle: function(on) {
		return (on ? callEnable() : callDisable()).then(function(res) {
			if (!res || !res.ok)
				ui.addNotification(null, E('p', {}, (res && res.error) || _('The change failed.')), 'danger');
			else
				ui.addNotification(null, E('p', {}, res.message), 'info');
		});
	},

	render: function(data) {
		const statusTable = E('table', { 'class': 'table' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, _('Item')),
				E('th', { 'class': 'th' }, _('Value'))
			])
		]);
		const callsTable = E('table', { 'class': 'table' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, _('LAN client')),
				E('th', { 'class': 'th' }, _('Call ID')),
				E('th', { 'class': 'th' }, _('Server')),
				E('th', { 'class': 'th' }, _('Server call ID')),
				E('th', { 'class': 'th' }, _('NAT call ID')),
				E('th', { 'class': 'th' }, _('State')),
				E('th', { 'class': 'th' }, _('GRE out (packets / bytes)')),
				E('th', { 'class': 'th' }, _('GRE in (packets / bytes)')),
				E('th', { 'class': 'th' }, _('Age'))
			])
		]);
		fillTable(statusTable, statusRows(data[1]), _('No status'));
		fillTable(callsTable, mappingRows(data[2]), _('No active PPTP calls'));

		poll.add(function() {
			return Promise.all([
				L.resolveDefault(callStatus(), { error: _('no answer from rpcd') }),
				L.resolveDefault(callMappings(), { mappings: [] })
			]).then(function(r) {
				fillTable(statusTable, statusRows(r[0]), _('No status'));
				fillTable(callsTable, mappingRows(r[1]), _('No active PPTP calls'));
			});
		}, POLL_SECONDS);

		const m = new form.Map('pptp-alg', _('VPN Passthrough'),
			_('Lets any number of LAN hosts hold PPTP VPN tunnels at once, to one server or many. ' +
			  'While it is enabled, the firewall stops assigning the kernel PPTP helper on the LAN zones; ' +
			  'disabling it restores them.'));
		const s = m.section(form.NamedSection, 'main', 'pptp-alg', _('Settings'));
		s.addremove = false;

		let o = s.option(form.Flag, 'enabled', _('Enable PPTP passthrough'));
		o.rmempty = false;

		o = s.option(widgets.NetworkSelect, 'lan', _('LAN networks'),
			_('PPTP clients in these networks are served.'));
		o.multiple = true;
		o.nocreate = true;
		o.rmempty = false;

		o = s.option(widgets.NetworkSelect, 'wan', _('WAN network'),
			_('Tunnels leave from the first IPv4 address of this network.'));
		o.nocreate = true;
		o.rmempty = false;

		o = s.option(form.Value, 'max_conns_per_client', _('Control connections per LAN host'));
		o.datatype = 'range(1,65535)';
		o.placeholder = '16';

		o = s.option(form.Value, 'max_calls_per_client', _('Calls per LAN host'));
		o.datatype = 'range(1,65535)';
		o.placeholder = '64';

		o = s.option(form.Value, 'max_calls', _('Calls in all'));
		o.datatype = 'range(1,65535)';
		o.placeholder = '16384';

		o = s.option(form.Value, 'idle_timeout', _('Idle timeout (seconds)'),
			_('A call whose GRE has been silent this long is released.'));
		o.datatype = 'min(1)';
		o.placeholder = '300';

		o = s.option(form.Flag, 'fast_path', _('GRE fast path'),
			_('Forward the GRE of known calls straight from the interfaces, past routing and the firewall\'s chains. Off: through the firewall, as other traffic.'));
		o.default = '1';

		const self = this;
		return m.render().then(function(mapEl) {
			return E([], [
				mapEl,
				E('div', { 'class': 'cbi-section' }, [
					E('h3', {}, _('Status')),
					statusTable,
					E('div', { 'class': 'cbi-page-actions' }, [
						E('button', {
							'class': 'cbi-button cbi-button-positive',
							'click': ui.createHandlerFn(self, 'toggle', true)
						}, _('Translate now')),
						' ',
						E('button', {
							'class': 'cbi-button cbi-button-negative',
							'click': ui.createHandlerFn(self, 'toggle', false)
						}, _('Pause until restart'))
					])
				]),
				E('div', { 'class': 'cbi-section' }, [
					E('h3', {}, _('Active GRE mappings')),
					E('p', {}, _('Refreshed every %d seconds.').format(POLL_SECONDS)),
					callsTable
				])
			]);
		});
	}
});
