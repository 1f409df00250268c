package nat

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names inside the table, as `nft list table ip pptp_alg` shows them.
const (
	setLANIfaces    = "lan_ifaces"
	mapGREIifs      = "gre_iifs"
	mapGREIn        = "gre_in"
	setGREOut       = "gre_out"
	setGRECalls     = "gre_calls"
	chainGREPre     = "gre_prerouting"
	chainGREFromWAN = "gre_from_wan"
	chainGREFromLAN = "gre_from_lan"
	chainGREPost    = "gre_postrouting"
	chainRelayPre   = "relay_prerouting"
	chainRelayReply = "relay_to_lan"
	chainRelayRedir = "relay_redirect"
	chainRelayIn    = "relay_input"
	chainRelayOut   = "relay_output"
)

// Set IDs name the sets within one batch, where a rule's lookup may refer to
// a set created in the same batch. They are fixed here rather than left to
// google/nftables, whose process-wide counter would make the encoded batch
// depend on what else the process has done.
const (
	idLANIfaces = 1
	idGREIn     = 2
	idGREOut    = 3
	idGREIifs   = 4
	idGRECalls  = 6 // 5 is the fast path's lan_oif
)

// PPTP's enhanced GRE header (RFC 2637 section 4.1).
const (
	ipProtoGRE = 47 // IPPROTO_GRE
	// The first 32 bits of the GRE header, masked: the K (key present) bit,
	// version 1, and protocol type 0x880b (PPP).
	greHeadMask = 0x2007ffff
	greHeadPPTP = 0x2001880b
	greKeyOff   = 6 // the receiver's call ID, 2 bytes
)

// ipsDstNAT is IPS_DST_NAT from linux/netfilter/nf_conntrack_common.h, the
// ct status bit of a connection whose destination was translated.
const ipsDstNAT = 1 << 5

// rtnLocal is RTN_LOCAL, the address type fib reports for the router's own
// addresses.
const rtnLocal = unix.RTN_LOCAL

// The registers of the 32-bit register file. NFT_REG32_00 is where the
// 16-byte NFT_REG_1 begins, and the kernel dumps it as NFT_REG_1: nft prints
// reg 8 as "reg 1" and reg 9 as "reg 9".
const (
	reg8  = unix.NFT_REG32_00
	reg9  = unix.NFT_REG32_01
	reg10 = unix.NFT_REG32_02
)

// Chain priorities, as nft spells them.
var (
	prioRaw         = nftables.ChainPriorityRaw                                     // raw (-300)
	prioSrcNAT      = nftables.ChainPriorityNATSource                               // srcnat (100)
	prioDstNATLess5 = nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest - 5) // dstnat - 5 (-105)
	prioFilterLess5 = nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 5)  // filter - 5 (-5)
	policyAccept    = func() *nftables.ChainPolicy { p := nftables.ChainPolicyAccept; return &p }()
)

// Key and data types. Set through nft's type numbers, they make `nft list`
// print addresses and call IDs instead of hex. inet_service is nft's 16-bit
// big-endian type; nft prints its values as plain numbers.
var (
	typeServerCall = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)                      // ipv4_addr . inet_service
	typeOutCall    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetService) // ipv4_addr . ipv4_addr . inet_service
)

// objects are the table, sets and chains of one Plane. They are values that
// name kernel objects; building them sends nothing.
type objects struct {
	table                                       *nftables.Table
	lanIfaces, greIifs, greIn, greOut, greCalls *nftables.Set
	grePre, greFromWAN, greFromLAN              *nftables.Chain
	grePost, relayPre, relayIn                  *nftables.Chain
	relayReply                                  *nftables.Chain
	relayRedir                                  *nftables.Chain // empty unless Config.Redirect
	relayOut                                    *nftables.Chain // nil unless Config.RouterCalls
}

func newObjects(cfg Config) objects {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: cfg.Table}
	return objects{
		table: t,
		// set lan_ifaces { type ifname; }
		//
		// nft prints ifname keys as "" unless the set's userdata says they
		// are host order, as nft itself writes it. google/nftables encodes
		// that userdata value little-endian on every host, so on big-endian
		// routers nft reads a wrong byte order and may still print "" (the
		// kernel does not read userdata).
		lanIfaces: &nftables.Set{
			Table:        t,
			ID:           idLANIfaces,
			Name:         setLANIfaces,
			KeyType:      nftables.TypeIFName,
			KeyByteOrder: binaryutil.NativeEndian,
		},
		// map gre_iifs { type ifname : verdict; size N; }
		//
		// One iifname load and one lookup send PPTP GRE to the chain for
		// its side; a rule per side would load the name again for each.
		// Not flagged constant: google/nftables then leaves out the
		// userdata that makes nft print the names.
		greIifs: &nftables.Set{
			Table:        t,
			ID:           idGREIifs,
			Name:         mapGREIifs,
			IsMap:        true,
			KeyType:      nftables.TypeIFName,
			KeyByteOrder: binaryutil.NativeEndian,
			DataType:     nftables.TypeVerdict,
			// The WAN and each LAN. The kernel chooses the set's backend
			// by its size, when known.
			Size: uint32(1 + len(cfg.LAN)),
		},
		// map gre_in { type ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }
		greIn: &nftables.Set{
			Table:    t,
			ID:       idGREIn,
			Name:     mapGREIn,
			IsMap:    true,
			KeyType:  typeServerCall,
			DataType: typeServerCall,
			Counter:  true,
		},
		// set gre_out { type ipv4_addr . ipv4_addr . inet_service; counter; }
		greOut: &nftables.Set{
			Table:   t,
			ID:      idGREOut,
			Name:    setGREOut,
			KeyType: typeOutCall,
			Counter: true,
		},
		// set gre_calls { type ipv4_addr . inet_service; }
		//
		// Every relayed call's server and server call ID: GRE from a LAN
		// host that is not the call's own client and carries them is an
		// attempt to inject into that call.
		greCalls: &nftables.Set{
			Table:   t,
			ID:      idGRECalls,
			Name:    setGRECalls,
			KeyType: typeServerCall,
		},
		// chain gre_prerouting { type filter hook prerouting priority raw; policy accept; }
		grePre: &nftables.Chain{
			Table: t, Name: chainGREPre, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: prioRaw, Policy: policyAccept,
		},
		// chain gre_from_wan, chain gre_from_lan: regular chains, reached
		// through gre_iifs.
		greFromWAN: &nftables.Chain{Table: t, Name: chainGREFromWAN},
		greFromLAN: &nftables.Chain{Table: t, Name: chainGREFromLAN},
		// chain gre_postrouting { type filter hook postrouting priority srcnat; policy accept; }
		grePost: &nftables.Chain{
			Table: t, Name: chainGREPost, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: prioSrcNAT, Policy: policyAccept,
		},
		// chain relay_prerouting: a regular chain, reached from
		// gre_prerouting (priority raw) for TCP to port 1723 only.
		//
		// At raw, before conntrack: the relayed connections are untracked,
		// so no conntrack helper can be set on them and no NAT applies.
		// Not a base chain of its own: every forwarded packet would enter
		// it and pay its interface lookups.
		relayPre: &nftables.Chain{Table: t, Name: chainRelayPre},
		// chain relay_to_lan { type filter hook output priority raw; policy accept; }
		relayReply: &nftables.Chain{
			Table: t, Name: chainRelayReply, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: prioRaw, Policy: policyAccept,
		},
		// chain relay_redirect { type nat hook prerouting priority dstnat - 5; policy accept; }
		//
		// Always there, so that a switch of mode only flushes and adds
		// rules. Empty, it costs nothing: the kernel runs NAT chains for
		// a connection's first packet only.
		relayRedir: &nftables.Chain{
			Table: t, Name: chainRelayRedir, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: prioDstNATLess5, Policy: policyAccept,
		},
		// chain relay_input { type filter hook input priority filter - 5; policy accept; }
		relayIn: &nftables.Chain{
			Table: t, Name: chainRelayIn, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: prioFilterLess5, Policy: policyAccept,
		},
		// chain relay_output { type nat hook output priority dstnat - 5; policy accept; }
		relayOut: func() *nftables.Chain {
			if !cfg.RouterCalls {
				return nil
			}
			return &nftables.Chain{
				Table: t, Name: chainRelayOut, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookOutput, Priority: prioDstNATLess5, Policy: policyAccept,
			}
		}(),
	}
}

// queueInstall queues, without sending, the batch that replaces any table of
// the same name with a fresh one: "add table" then "delete table" make the
// deletion succeed whether or not an old table exists, the nft idiom for an
// atomic replace that works on kernels without NFT_MSG_DESTROYTABLE.
func (o objects) queueInstall(c *nftables.Conn, cfg Config) error {
	c.AddTable(o.table) // add table ip pptp_alg
	c.DelTable(o.table) // delete table ip pptp_alg
	c.AddTable(o.table) // add table ip pptp_alg
	// add set ip pptp_alg lan_ifaces { type ifname; elements = { LAN... } }
	if err := c.AddSet(o.lanIfaces, ifnameElements(cfg.LAN)); err != nil {
		return err
	}
	if err := c.AddSet(o.greIn, nil); err != nil {
		return err
	}
	if err := c.AddSet(o.greOut, nil); err != nil {
		return err
	}
	if err := c.AddSet(o.greCalls, nil); err != nil {
		return err
	}
	// The chains come before gre_iifs: its elements name two of them.
	for _, ch := range []*nftables.Chain{o.grePre, o.greFromWAN, o.greFromLAN, o.grePost, o.relayPre, o.relayRedir, o.relayReply, o.relayIn, o.relayOut} {
		if ch != nil {
			c.AddChain(ch)
		}
	}
	// add map ip pptp_alg gre_iifs { ...; elements = { WAN : goto gre_from_wan, LAN... : goto gre_from_lan } }
	if err := c.AddSet(o.greIifs, o.iifElements(cfg)); err != nil {
		return err
	}
	for _, r := range o.rules(cfg) {
		c.AddRule(r)
	}
	return nil
}

// rules returns every rule of the table in order.
//
// Every packet through the router passes gre_prerouting and gre_postrouting,
// so both test the cheap, inline-evaluated IP protocol first: other traffic
// leaves after a payload load and a compare per rule. gre_prerouting also
// hands TCP to port 1723 to relay_prerouting, rather than relay_prerouting
// being a base chain that every packet enters.
//
// pptp-alg owns only the calls it relays. PPTP GRE that matches none of
// them leaves gre_from_wan and gre_from_lan without a verdict and goes on to
// conntrack, the firewall and the local stack as if pptp-alg were not there:
// the router's own PPTP server, a port-forwarded server on the LAN. The one
// exception is GRE from a LAN host toward a relayed call's server with that
// call's server call ID: only the call's own client may send that.
func (o objects) rules(cfg Config) []*nftables.Rule {
	rule := func(ch *nftables.Chain, e []expr.Any) *nftables.Rule {
		return &nftables.Rule{Table: o.table, Chain: ch, Exprs: e}
	}
	rules := []*nftables.Rule{
		// <pptp gre> iifname vmap @gre_iifs
		rule(o.grePre, o.dispatchGRE()),
		// tcp dport 1723 goto relay_prerouting: inline-evaluated loads
		// and compares only, so that other traffic leaves without a
		// lookup (nft prints the ip protocol test as part of tcp dport)
		rule(o.grePre, append(matchTCPPort(2, 1723), &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainRelayPre})),
		// ip saddr . @th,48,16 ... map @gre_in: rewrite, notrack accept
		rule(o.greFromWAN, o.inboundTranslate()),
		// ip saddr . ip daddr . @th,48,16 @gre_out notrack accept
		rule(o.greFromLAN, o.outboundCheck()),
		// ip daddr . @th,48,16 @gre_calls drop
		rule(o.greFromLAN, o.impersonationDrop()),
		o.snatRule(cfg.WAN, cfg.WANAddr),
	}
	rules = append(rules, o.relayModeRules(cfg)...)
	rules = append(rules,
		rule(o.relayReply, o.relayReplyNotrack()),
		rule(o.relayIn, relayGuard(cfg.RelayPort)),
	)
	if o.relayOut != nil {
		rules = append(rules, rule(o.relayOut, relayOwnRedirect(cfg.WAN, cfg.RelayPort, cfg.RelayMark)))
	}
	return rules
}

// relayModeRules are the rules that take new LAN control connections to the
// relay: by tproxy, or by a NAT redirect while Config.Redirect, which
// needs no policy rule (so no forwarded packet pays for one) and works
// where tproxy cannot: with bridge-nf-call-iptables=1, br_netfilter runs
// prerouting before a bridge hands a frame up, and the IP layer then drops
// the socket tproxy assigned. Redirected connections are tracked and
// NATed, so `nft flush ruleset` resets busy ones unless the table is owned
// (Config.Owner). The
// established-connection tproxy rule stays in both modes; it never matches
// a redirected connection, whose socket has the router's address.
func (o objects) relayModeRules(cfg Config) []*nftables.Rule {
	rule := func(ch *nftables.Chain, e []expr.Any) *nftables.Rule {
		return &nftables.Rule{Table: o.table, Chain: ch, Exprs: e}
	}
	rules := []*nftables.Rule{rule(o.relayPre, o.relayTProxyEstablished(cfg.TProxyMark, cfg.TProxyMask))}
	if cfg.Redirect {
		// iifname @lan_ifaces tcp dport 1723 fib daddr type != local redirect to :RELAYPORT
		return append(rules, rule(o.relayRedir, concat(o.matchRelayedControl(), redirectTo(cfg.RelayPort))))
	}
	return append(rules, rule(o.relayPre, o.relayTProxyNew(cfg.RelayPort, cfg.TProxyMark, cfg.TProxyMask)))
}

// dispatchGRE sends PPTP GRE from the WAN to gre_from_wan and from the LAN
// to gre_from_lan. GRE from other interfaces, and all other traffic, passes.
//
//	ip protocol gre @th,0,32 & 0x2007ffff == 0x2001880b iifname vmap @gre_iifs
func (o objects) dispatchGRE() []expr.Any {
	return concat(
		matchPPTPGRE(),
		[]expr.Any{
			// [ meta load iifname => reg 1 ]
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: unix.NFT_REG_1},
			// [ lookup reg 1 set gre_iifs dreg 0 ]
			&expr.Lookup{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_VERDICT, IsDestRegSet: true,
				SetName: o.greIifs.Name, SetID: o.greIifs.ID},
		},
	)
}

// matchTCPPort is tcp sport PORT (off 0) or tcp dport PORT (off 2):
// ip protocol tcp, then the port, by inline-evaluated loads and compares.
// Not inlined: inlined into each caller it grows the router binary past a
// 64 KiB step.
//
//go:noinline
func matchTCPPort(off uint32, port uint16) []expr.Any {
	return []expr.Any{
		// [ payload load 1b @ network header + 9 => reg 1 ]
		&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
		// [ cmp eq reg 1 0x06 ]
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{unix.IPPROTO_TCP}},
		// [ payload load 2b @ transport header + OFF => reg 1 ]
		&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		// [ cmp eq reg 1 PORT ]
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: be16(port)},
	}
}

// iifElements map the WAN to gre_from_wan and each LAN to gre_from_lan.
func (o objects) iifElements(cfg Config) []nftables.SetElement {
	el := func(name, chain string) nftables.SetElement {
		return nftables.SetElement{Key: ifname(name), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}}
	}
	els := []nftables.SetElement{el(cfg.WAN, chainGREFromWAN)}
	for _, n := range cfg.LAN {
		els = append(els, el(n, chainGREFromLAN))
	}
	return els
}

// inboundTranslate rewrites GRE from the server to the WAN address into GRE
// for the LAN client, and lets it through untracked.
//
//	ip daddr . @th,48,16 set ip saddr . @th,48,16 map @gre_in notrack accept
func (o objects) inboundTranslate() []expr.Any {
	return concat(
		greInRewrite(o.greIn),
		[]expr.Any{
			// [ notrack ]
			&expr.Notrack{},
		},
		verdict(expr.VerdictAccept),
	)
}

// greInRewrite rewrites GRE from a server into GRE for the LAN client, with
// one lookup in greIn (the ip table's gre_in, or the fast path's) whose
// 8-byte value (client address, client call ID) lands in two consecutive
// registers: reg 8 and 9 hold them after. A packet without an element
// stops at the lookup.
//
//	ip daddr . @th,48,16 set ip saddr . @th,48,16 map @gre_in
func greInRewrite(greIn *nftables.Set) []expr.Any {
	return []expr.Any{
		// [ payload load 4b @ network header + 12 => reg 8 ]   ip saddr
		&expr.Payload{DestRegister: reg8, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		// [ payload load 2b @ transport header + 6 => reg 9 ]  NAT call ID
		&expr.Payload{DestRegister: reg9, Base: expr.PayloadBaseTransportHeader, Offset: greKeyOff, Len: 2},
		// [ lookup reg 8 set gre_in dreg 8 ]                   reg 8 = client, reg 9 = client call ID
		&expr.Lookup{SourceRegister: reg8, DestRegister: reg8, IsDestRegSet: true, SetName: greIn.Name, SetID: greIn.ID},
		// [ payload write reg 8 => 4b @ network header + 16 csum_type 1 csum_off 10 ]   ip daddr
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg8, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4,
			CsumType: expr.CsumTypeInet, CsumOffset: 10},
		// [ payload write reg 9 => 2b @ transport header + 6 ]  GRE has no checksum here (C bit clear)
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg9, Base: expr.PayloadBaseTransportHeader, Offset: greKeyOff, Len: 2},
	}
}

// outboundCheck lets GRE from a LAN host pass only for a call of its own.
//
//	ip saddr . ip daddr . @th,48,16 @gre_out notrack accept
func (o objects) outboundCheck() []expr.Any {
	return concat(
		loadGREOutKey(),
		[]expr.Any{
			// [ lookup reg 8 set gre_out ]
			&expr.Lookup{SourceRegister: reg8, SetName: o.greOut.Name, SetID: o.greOut.ID},
			// [ notrack ]
			&expr.Notrack{},
		},
		verdict(expr.VerdictAccept),
	)
}

// loadGREOutKey loads the gre_out key of GRE from a LAN host into reg 8 to
// 10, for the ip table's set and the fast path's map alike.
//
//	ip saddr . ip daddr . @th,48,16
func loadGREOutKey() []expr.Any {
	return []expr.Any{
		// [ payload load 4b @ network header + 12 => reg 8 ]   ip saddr
		&expr.Payload{DestRegister: reg8, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		// [ payload load 4b @ network header + 16 => reg 9 ]   ip daddr
		// (one 8-byte load would do, but nft would then print it as @nh,96,64)
		&expr.Payload{DestRegister: reg9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		// [ payload load 2b @ transport header + 6 => reg 10 ] server call ID
		&expr.Payload{DestRegister: reg10, Base: expr.PayloadBaseTransportHeader, Offset: greKeyOff, Len: 2},
	}
}

// impersonationDrop drops GRE from a LAN host that carries a relayed call's
// server and server call ID but missed gre_out: it is not that call's client.
// Anything else goes on as ordinary forwarded GRE.
//
//	ip daddr . @th,48,16 @gre_calls drop
func (o objects) impersonationDrop() []expr.Any {
	return concat(
		[]expr.Any{
			// [ payload load 4b @ network header + 16 => reg 8 ]   ip daddr
			&expr.Payload{DestRegister: reg8, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			// [ payload load 2b @ transport header + 6 => reg 9 ]  server call ID
			&expr.Payload{DestRegister: reg9, Base: expr.PayloadBaseTransportHeader, Offset: greKeyOff, Len: 2},
			// [ lookup reg 8 set gre_calls ]
			&expr.Lookup{SourceRegister: reg8, SetName: o.greCalls.Name, SetID: o.greCalls.ID},
		},
		verdict(expr.VerdictDrop),
	)
}

// snatRule is the only rule of gre_postrouting. With a WAN address it is the
// stateless source NAT of outbound GRE; without one, untracked GRE leaving
// the WAN is dropped rather than sent with a LAN source address.
//
//	ip protocol gre oifname WAN ct state untracked ip saddr != WANADDR ip saddr set WANADDR
//	ip protocol gre oifname WAN ct state untracked drop          (no WAN address yet)
func (o objects) snatRule(wan string, addr netip.Addr) *nftables.Rule {
	e := []expr.Any{
		// [ payload load 1b @ network header + 9 => reg 1 ]
		&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
		// [ cmp eq reg 1 0x2f ]
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{ipProtoGRE}},
		// [ meta load oifname => reg 1 ]
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: unix.NFT_REG_1},
		// [ cmp eq reg 1 WAN ]
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: ifname(wan)},
		// [ ct load state => reg 1 ]
		&expr.Ct{Key: expr.CtKeySTATE, Register: unix.NFT_REG_1},
		// [ bitwise reg 1 = ( reg 1 & untracked ) ^ 0 ]   ct state is host order
		&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4,
			Mask: hostU32(expr.CtStateBitUNTRACKED), Xor: hostU32(0)},
		// [ cmp neq reg 1 0 ]
		&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: hostU32(0)},
	}
	if !addr.IsValid() {
		e = concat(e, verdict(expr.VerdictDrop))
	} else {
		a := addr.As4()
		e = concat(e, []expr.Any{
			// [ payload load 4b @ network header + 12 => reg 1 ]
			&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			// [ cmp neq reg 1 WANADDR ]
			&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: a[:]},
			// [ immediate reg 1 WANADDR ]
			&expr.Immediate{Register: unix.NFT_REG_1, Data: a[:]},
			// [ payload write reg 1 => 4b @ network header + 12 csum_type 1 csum_off 10 ]
			&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader,
				Offset: 12, Len: 4, CsumType: expr.CsumTypeInet, CsumOffset: 10},
		})
	}
	return &nftables.Rule{Table: o.table, Chain: o.grePost, Exprs: e}
}

// relayTProxyEstablished and relayTProxyNew hand PPTP control connections
// from the LAN to the relay's transparent socket, except those addressed
// to the router itself (its own PPTP server). A connection keeps its
// addresses: the relay's accepted socket is bound to the server's address,
// so nothing it sends needs translating, and the client's packets find it
// by their own tuple. Both leave the packets untracked (no conntrack
// helper, no NAT) and set the mark that routes them to the local stack
// (tproxyroute.go). tproxy and the statements after it apply only if a
// socket took the packet.
//
// relayTProxyEstablished takes the packets of connections the relay
// holds: tproxy looks for an established socket first, and its listener
// lookup, at port 1723, finds no transparent socket. A connection opened
// before pptp-alg was (a tunnel carried directly while it was disabled)
// has no socket here and goes on as before.
//
//	iifname @lan_ifaces tcp dport 1723 fib daddr type != local tproxy to :1723 notrack meta mark set mark & ~MASK | MARK accept
func (o objects) relayTProxyEstablished(mark, mask uint32) []expr.Any {
	return concat(
		o.matchRelayedControl(),
		tproxyTo(1723),
		[]expr.Any{
			// [ notrack ]
			&expr.Notrack{},
		},
		setMark(mark, mask),
		verdict(expr.VerdictAccept),
	)
}

// relayTProxyNew takes new connections (a SYN alone) to the relay's
// listener.
//
//	iifname @lan_ifaces tcp dport 1723 fib daddr type != local tcp flags & (fin|syn|rst|ack) == syn tproxy to :RELAYPORT notrack meta mark set mark & ~MASK | MARK
func (o objects) relayTProxyNew(port uint16, mark, mask uint32) []expr.Any {
	return concat(
		o.matchRelayedControl(),
		[]expr.Any{
			// [ payload load 1b @ transport header + 13 => reg 1 ]
			&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			// [ bitwise reg 1 = ( reg 1 & 0x17 ) ^ 0x00 ]   fin, syn, rst, ack
			&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 1,
				Mask: []byte{0x17}, Xor: []byte{0}},
			// [ cmp eq reg 1 0x02 ]   syn
			&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{0x02}},
		},
		tproxyTo(port),
		[]expr.Any{
			// [ notrack ]
			&expr.Notrack{},
		},
		setMark(mark, mask),
	)
}

// matchRelayedControl is iifname @lan_ifaces tcp dport 1723 fib daddr type != local.
func (o objects) matchRelayedControl() []expr.Any {
	return concat(
		o.matchLANIface(),
		matchTCPPort(2, 1723),
		[]expr.Any{
			// [ fib daddr type => reg 1 ]
			&expr.Fib{Register: unix.NFT_REG_1, FlagDADDR: true, ResultADDRTYPE: true},
			// [ cmp neq reg 1 local ]   the type is host order
			&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: hostU32(rtnLocal)},
		},
	)
}

// tproxyTo is tproxy to :PORT.
func tproxyTo(port uint16) []expr.Any {
	return []expr.Any{
		// [ immediate reg 1 PORT ]
		&expr.Immediate{Register: unix.NFT_REG_1, Data: be16(port)},
		// [ tproxy ip port reg 1 ]
		&expr.TProxy{Family: unix.NFPROTO_IPV4, TableFamily: unix.NFPROTO_IPV4, RegPort: unix.NFT_REG_1},
	}
}

// relayReplyNotrack leaves the relay's packets to LAN clients untracked,
// as the clients' packets are: they leave from the server's address, which
// is not the router's. Every packet the router sends passes here, so the
// inline-evaluated protocol and port tests come before the interface
// lookup.
//
//	tcp sport 1723 oifname @lan_ifaces fib saddr type != local notrack
func (o objects) relayReplyNotrack() []expr.Any {
	return append(matchTCPPort(0, 1723),
		// [ meta load oifname => reg 1 ]
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: unix.NFT_REG_1},
		// [ lookup reg 1 set lan_ifaces ]
		&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: o.lanIfaces.Name, SetID: o.lanIfaces.ID},
		// [ fib saddr type => reg 1 ]
		&expr.Fib{Register: unix.NFT_REG_1, FlagSADDR: true, ResultADDRTYPE: true},
		// [ cmp neq reg 1 local ]
		&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: hostU32(rtnLocal)},
		// [ notrack ]
		&expr.Notrack{},
	)
}

// setMark is meta mark set mark & ~MASK | MARK: the mark's bits, the rest
// of the packet's mark kept for whoever else uses marks.
func setMark(mark, mask uint32) []expr.Any {
	return []expr.Any{
		// [ meta load mark => reg 1 ]
		&expr.Meta{Key: expr.MetaKeyMARK, Register: unix.NFT_REG_1},
		// [ bitwise reg 1 = ( reg 1 & ~MASK ) ^ MARK ]   the mark is host order
		&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4,
			Mask: hostU32(^mask), Xor: hostU32(mark)},
		// [ meta set mark with reg 1 ]
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: unix.NFT_REG_1},
	}
}

// relayOwnRedirect sends the router's own PPTP control connections out of
// the WAN to the relay too, so that its calls take call IDs from the same
// table as the LAN's and never collide with them. The relay's own
// connections carry mark and pass.
//
//	oifname WAN tcp dport 1723 meta mark & MARK == 0 redirect to :RELAYPORT
func relayOwnRedirect(wan string, port uint16, mark uint32) []expr.Any {
	return concat(
		[]expr.Any{
			// [ meta load oifname => reg 1 ]
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: unix.NFT_REG_1},
			// [ cmp eq reg 1 WAN ]
			&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: ifname(wan)},
		},
		matchTCPPort(2, 1723),
		[]expr.Any{
			// [ meta load mark => reg 1 ]
			&expr.Meta{Key: expr.MetaKeyMARK, Register: unix.NFT_REG_1},
			// [ bitwise reg 1 = ( reg 1 & MARK ) ^ 0 ]   the mark is host order
			&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4,
				Mask: hostU32(mark), Xor: hostU32(0)},
			// [ cmp eq reg 1 0 ]
			&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: hostU32(0)},
		},
		redirectTo(port),
	)
}

// redirectTo is redirect to :PORT.
func redirectTo(port uint16) []expr.Any {
	return []expr.Any{
		// [ immediate reg 1 RELAYPORT ]
		&expr.Immediate{Register: unix.NFT_REG_1, Data: be16(port)},
		// [ redir proto_min reg 1 flags 0x2 ]   NF_NAT_RANGE_PROTO_SPECIFIED
		&expr.Redir{RegisterProtoMin: unix.NFT_REG_1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

// relayGuard keeps the relay port reachable only by tproxy, which leaves
// the port of a packet as it is, and by the redirect of the router's own
// connections (a DNAT).
//
//	tcp dport RELAYPORT ct status & dnat == 0 drop
func relayGuard(port uint16) []expr.Any {
	return concat(
		matchTCPPort(2, port),
		[]expr.Any{
			// [ ct load status => reg 1 ]
			&expr.Ct{Key: expr.CtKeySTATUS, Register: unix.NFT_REG_1},
			// [ bitwise reg 1 = ( reg 1 & dnat ) ^ 0 ]   ct status is host order
			&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4,
				Mask: hostU32(ipsDstNAT), Xor: hostU32(0)},
			// [ cmp eq reg 1 0 ]
			&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: hostU32(0)},
		},
		verdict(expr.VerdictDrop),
	)
}

// matchPPTPGRE matches PPTP's enhanced GRE in one load:
// ip protocol 47 (@th,0,16 & 0x2007) == 0x2001 @th,16,16 == 0x880b.
func matchPPTPGRE() []expr.Any {
	return []expr.Any{
		// [ payload load 1b @ network header + 9 => reg 1 ]
		&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
		// [ cmp eq reg 1 0x2f ]
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{ipProtoGRE}},
		// [ payload load 4b @ transport header + 0 => reg 1 ]
		&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 4},
		// [ bitwise reg 1 = ( reg 1 & 0x2007ffff ) ^ 0 ]
		&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4,
			Mask: be32(greHeadMask), Xor: be32(0)},
		// [ cmp eq reg 1 0x2001880b ]
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: be32(greHeadPPTP)},
	}
}

// matchLANIface is iifname @lan_ifaces.
func (o objects) matchLANIface() []expr.Any {
	return []expr.Any{
		// [ meta load iifname => reg 1 ]
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: unix.NFT_REG_1},
		// [ lookup reg 1 set lan_ifaces ]
		&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: o.lanIfaces.Name, SetID: o.lanIfaces.ID},
	}
}

// verdict is [ immediate reg 0 KIND ].
func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k}}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var n int
	for _, p := range parts {
		n += len(p)
	}
	out := make([]expr.Any, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifname pads an interface name to IFNAMSIZ, as the kernel's meta iifname
// and oifname fill all 16 bytes of the register.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func ifnameElements(names []string) []nftables.SetElement {
	els := make([]nftables.SetElement, len(names))
	for i, n := range names {
		els[i] = nftables.SetElement{Key: ifname(n)}
	}
	return els
}

// inKey is the gre_in key: server . NAT call ID.
func inKey(server netip.Addr, natID uint16) []byte { return addrCall(server, natID) }

// inValue is the gre_in value: client . client call ID.
func inValue(client netip.Addr, clientID uint16) []byte { return addrCall(client, clientID) }

// outKey is the gre_out key: client . server . server call ID.
func outKey(client, server netip.Addr, serverID uint16) []byte {
	c := client.As4()
	return append(c[:], addrCall(server, serverID)...)
}

// addrCall lays out an IPv4 address and a call ID in two 4-byte registers.
func addrCall(a netip.Addr, id uint16) []byte {
	b := make([]byte, 8)
	a4 := a.As4()
	copy(b, a4[:])
	binary.BigEndian.PutUint16(b[4:], id)
	return b
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// hostU32 encodes a value the kernel keeps in host order, such as ct state
// and ct status bits.
func hostU32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
