'use strict';
'require baseclass';
'require rpc';

// The "VPN Passthrough" panel of Status > Overview: pptp-alg's state in a
// few rows, from the rpcd plugin luci.pptp-alg. Network > VPN Passthrough
// has the rest.

const callStatus = rpc.declare({ object: 'luci.pptp-alg', method: 'status' });

// carrying says how many control connections and calls, in words.
function carrying(d) {
	const conns = d.control_connections || 0, calls = d.calls || 0;
	return '%s, %s'.format(N_(conns, '%d control connection', '%d control connections').format(conns),
		N_(calls, '%d call', '%d calls').format(calls));
}

return baseclass.extend({
	title: _('VPN Passthrough'),

	load: function() {
		return L.resolveDefault(callStatus(), null);
	},

	render: function(reply) {
		if (!reply)
			return null; // no ACL for it, or no rpcd plugin: no panel
		const d = reply.daemon || {};
		let rows;
		if (!reply.running)
			rows = [ [ _('Service'), _('Stopped') ] ];
		else
			rows = [
				[ _('Service'), d.enabled ? _('Running, translating PPTP') : _('Running, paused') ],
				[ _('WAN address'), d.wan_addr || _('none') ],
				[ _('Carrying'), carrying(d) ],
				[ _('GRE fast path'), d.fast_path ? _('On') : _('Off') ]
			];
		if (reply.running && (d.kernel_pptp_helper || []).length)
			rows.push([ _('Kernel PPTP helper'), _('Assigned: see Network > VPN Passthrough') ]);
		return E('table', { 'class': 'table' }, rows.map(function(r) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, r[0]),
				E('td', { 'class': 'td left' }, r[1])
			]);
		}));
	}
});
