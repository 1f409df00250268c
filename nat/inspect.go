package nat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Ruleset is what the rest of the IPv4 ruleset (tables of family ip and
// inet) does to PPTP, for the operator's checks: where the kernel's own PPTP
// helper is assigned, and whether the forward hook passes the untracked GRE
// of pptp-alg's calls.
type Ruleset struct {
	// PPTPHelper lists the rules that set the kernel's PPTP conntrack
	// helper (nf_conntrack_pptp) on connections.
	PPTPHelper []HelperRule
	// Forward lists the base chains at the forward hook. Forwarded GRE
	// must pass every one of them.
	Forward []ForwardChain
	// Input lists the base chains at the input hook: the router's own
	// PPTP, client or server, must pass every one of them.
	Input []InputChain
}

// InputChain is a base chain at the input hook, and what the chains it
// reaches accept explicitly (a rule naming GRE or tcp/1723; a blanket
// accept of a zone does not count).
type InputChain struct {
	BaseChain
	// AcceptsUntrackedGRE: GRE that pptp-alg translated for the router's
	// own calls (the fw4 include).
	AcceptsUntrackedGRE bool
	// AcceptsGRE: GRE whatever its conntrack state, as an "Allow-GRE" rule
	// does; a PPTP server on the router needs it.
	AcceptsGRE bool
	// AcceptsPPTP: tcp/1723, as an "Allow-PPTP" rule does.
	AcceptsPPTP bool
}

// BaseChain is a chain attached to a netfilter hook.
type BaseChain struct {
	Table    string // family and name, as nft names it: "inet fw4"
	Chain    string
	Hook     string // prerouting, input, forward, output or postrouting
	Priority int32
	Policy   string // accept or drop
}

// HelperRule is a rule that sets the kernel's PPTP helper on connections.
type HelperRule struct {
	Table string // "inet fw4"
	Chain string
	// From lists the base chains that reach Chain, itself or through
	// jumps and gotos. Empty if none does so (a verdict map might).
	From []BaseChain
}

// ForwardChain is a base chain at the forward hook.
type ForwardChain struct {
	BaseChain
	// AcceptsUntrackedGRE is set when the chain, or a chain it jumps to,
	// holds a rule that accepts GRE and, if it matches ct state at all,
	// matches untracked.
	AcceptsUntrackedGRE bool
}

// SeesRelayedConnections reports whether a helper set from b can land on a
// connection that pptp-alg relays, with the LAN's control connections taken
// by the NAT redirect (Config.Redirect) or not. By tproxy they are
// untracked from relay_prerouting (entered from gre_prerouting, priority
// raw) on, so no prerouting or input chain can set a helper on them. The redirect (relay_redirect)
// rewrites the client's tcp/1723 to the relay port at dstnat - 5, so a
// prerouting chain up to then still sees 1723. Output carries the relay's
// own connections to servers, and with the router's own connections, which
// the output hook redirects, input carries those too.
func (b BaseChain) SeesRelayedConnections(redirect bool) bool {
	switch b.Hook {
	case "prerouting":
		return redirect && b.Priority <= int32(*prioDstNATLess5)
	case "input", "output":
		return true
	}
	return false
}

// SeesRelayedConnections reports whether the helper rule can land on a
// relayed connection; a rule reached from no base chain that InspectRuleset
// could follow counts as one that can.
func (h HelperRule) SeesRelayedConnections(redirect bool) bool {
	if len(h.From) == 0 {
		return true
	}
	for _, b := range h.From {
		if b.SeesRelayedConnections(redirect) {
			return true
		}
	}
	return false
}

// InspectRuleset reads every IPv4 table of the network namespace (opts go to
// nftables.New, as for Open) and reports what it does to PPTP. It changes
// nothing. Helpers assigned through iptables-nft's CT target are found too;
// rules of the legacy iptables backend are not in nftables and are not.
func InspectRuleset(opts ...nftables.ConnOption) (Ruleset, error) {
	conn, err := dialNFT(opts) // one deadline for the whole inspection
	if err != nil {
		return Ruleset{}, fmt.Errorf("nat: inspect ruleset: %w", err)
	}
	defer conn.CloseLasting()
	tables, err := conn.ListTables()
	if err != nil {
		return Ruleset{}, fmt.Errorf("nat: list tables: %w", err)
	}
	chains, err := conn.ListChains()
	if err != nil {
		return Ruleset{}, fmt.Errorf("nat: list chains: %w", err)
	}
	var rs Ruleset
	for _, t := range tables {
		if t.Family != nftables.TableFamilyIPv4 && t.Family != nftables.TableFamilyINet {
			continue
		}
		if err := inspectTable(conn.Conn, t, chains, &rs); err != nil {
			return Ruleset{}, err
		}
	}
	return rs, nil
}

func inspectTable(conn *nftables.Conn, t *nftables.Table, all []*nftables.Chain, rs *Ruleset) error {
	name := familyName(t.Family) + " " + t.Name
	objs, err := conn.GetNamedObjects(t)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nat: list objects of table %s: %w", name, err)
	}
	helpers := pptpHelperObjects(objs)

	var chains []*nftables.Chain
	rules := map[string][]*nftables.Rule{}
	jumps := map[string][]string{}
	for _, c := range all {
		if c.Table.Name != t.Name || c.Table.Family != t.Family {
			continue
		}
		rs, err := conn.GetRules(t, c)
		if err != nil {
			if errors.Is(err, unix.ENOENT) { // deleted since the listing
				continue
			}
			return fmt.Errorf("nat: list rules of chain %s %s: %w", name, c.Name, err)
		}
		chains = append(chains, c)
		rules[c.Name] = rs
		for _, r := range rs {
			jumps[c.Name] = append(jumps[c.Name], jumpTargets(r)...)
		}
	}

	var bases []BaseChain
	reach := map[string]map[string]bool{} // base chain -> chains it reaches
	for _, c := range chains {
		b, ok := baseChain(name, c)
		if !ok {
			continue
		}
		bases = append(bases, b)
		reach[c.Name] = reachable(c.Name, jumps)
	}

	for _, c := range chains {
		if !slices.ContainsFunc(rules[c.Name], func(r *nftables.Rule) bool { return setsPPTPHelper(r, helpers) }) {
			continue
		}
		h := HelperRule{Table: name, Chain: c.Name}
		for _, b := range bases {
			if reach[b.Chain][c.Name] {
				h.From = append(h.From, b)
			}
		}
		rs.PPTPHelper = append(rs.PPTPHelper, h)
	}

	for _, b := range bases {
		switch b.Hook {
		case "forward":
			f := ForwardChain{BaseChain: b}
			for c := range reach[b.Chain] {
				if slices.ContainsFunc(rules[c], acceptsUntrackedGRE) {
					f.AcceptsUntrackedGRE = true
				}
			}
			rs.Forward = append(rs.Forward, f)
		case "input":
			in := InputChain{BaseChain: b}
			for c := range reach[b.Chain] {
				for _, r := range rules[c] {
					gre, anyState := acceptsGRE(r)
					in.AcceptsUntrackedGRE = in.AcceptsUntrackedGRE || gre
					in.AcceptsGRE = in.AcceptsGRE || anyState
					in.AcceptsPPTP = in.AcceptsPPTP || acceptsTCPPort(r, 1723)
				}
			}
			rs.Input = append(rs.Input, in)
		}
	}
	return nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprintf("family(%d)", f)
}

var hookNames = map[nftables.ChainHook]string{
	*nftables.ChainHookPrerouting:  "prerouting",
	*nftables.ChainHookInput:       "input",
	*nftables.ChainHookForward:     "forward",
	*nftables.ChainHookOutput:      "output",
	*nftables.ChainHookPostrouting: "postrouting",
}

func baseChain(table string, c *nftables.Chain) (BaseChain, bool) {
	if c.Hooknum == nil || c.Priority == nil {
		return BaseChain{}, false
	}
	hook, ok := hookNames[*c.Hooknum]
	if !ok { // ingress: no conntrack there yet
		return BaseChain{}, false
	}
	b := BaseChain{Table: table, Chain: c.Name, Hook: hook, Priority: int32(*c.Priority), Policy: "accept"}
	if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop {
		b.Policy = "drop"
	}
	return b, true
}

// reachable returns from and every chain it reaches by jump and goto.
func reachable(from string, jumps map[string][]string) map[string]bool {
	seen := map[string]bool{from: true}
	todo := []string{from}
	for len(todo) > 0 {
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, next := range jumps[c] {
			if !seen[next] {
				seen[next] = true
				todo = append(todo, next)
			}
		}
	}
	return seen
}

func jumpTargets(r *nftables.Rule) []string {
	var out []string
	for _, e := range r.Exprs {
		if v, ok := e.(*expr.Verdict); ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) {
			out = append(out, v.Chain)
		}
	}
	return out
}

// pptpHelperObjects returns the names of the table's ct helper objects of
// type "pptp" (nft: ct helper NAME { type "pptp" protocol tcp; }).
func pptpHelperObjects(objs []nftables.Obj) map[string]bool {
	names := map[string]bool{}
	for _, o := range objs {
		n, ok := o.(*nftables.NamedObj)
		if !ok || n.Type != nftables.ObjTypeCtHelper {
			continue
		}
		if h, ok := n.Obj.(*expr.CtHelper); ok && h.Name == "pptp" {
			names[n.Name] = true
		}
	}
	return names
}

// setsPPTPHelper reports whether r sets a PPTP helper: `ct helper set NAME`
// of one of helpers, a helper picked from a map in a table that has a PPTP
// helper (google/nftables reads such an objref with neither type nor name),
// or iptables-nft's `-j CT --helper pptp`.
func setsPPTPHelper(r *nftables.Rule, helpers map[string]bool) bool {
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Objref:
			if e.Type == int(nftables.ObjTypeCtHelper) && helpers[e.Name] {
				return true
			}
			if e.Name == "" && len(helpers) > 0 {
				return true
			}
		case *expr.Target:
			if e.Name == "CT" && xtCTHelper(e.Info) == "pptp" {
				return true
			}
		}
	}
	return false
}

// xtCTHelper returns the helper name of an xt CT target. Every revision of
// struct xt_ct_target_info starts with flags (2 bytes), zone (2), ct_events
// (4) and exp_events (4), then char helper[16].
func xtCTHelper(info xt.InfoAny) string {
	u, ok := info.(*xt.Unknown)
	if !ok || len(*u) < 28 {
		return ""
	}
	name, _, _ := bytes.Cut((*u)[12:28], []byte{0})
	return string(name)
}

// acceptsUntrackedGRE reports whether r is a rule like the fw4 include's
//
//	meta l4proto gre ct state untracked accept
//
// It follows which register holds the layer 4 protocol and which the ct
// state; other matches in the rule (interfaces, addresses) are allowed.
func acceptsUntrackedGRE(r *nftables.Rule) bool {
	untracked, _ := acceptsGRE(r)
	return untracked
}

// acceptsGRE reports whether r accepts GRE that is untracked, and whether
// it accepts GRE in any conntrack state (it matches no ct state at all).
func acceptsGRE(r *nftables.Rule) (untrackedGRE, anyGRE bool) {
	const (
		l4proto = iota + 1
		ctState
	)
	held := map[uint32]int{}    // register -> what it holds
	mask := map[uint32]uint32{} // register -> ct state bits kept by a bitwise
	var gre, stateMatched, untracked, accept bool
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			switch {
			case e.SourceRegister: // meta set: loads nothing
			case e.Key == expr.MetaKeyL4PROTO:
				held[e.Register] = l4proto
			default:
				delete(held, e.Register)
			}
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				continue
			}
			if e.Base == expr.PayloadBaseNetworkHeader && e.Offset == 9 && e.Len == 1 { // ip protocol
				held[e.DestRegister] = l4proto
			} else {
				delete(held, e.DestRegister)
			}
		case *expr.Ct:
			switch {
			case e.SourceRegister: // ct set
			case e.Key == expr.CtKeySTATE:
				held[e.Register] = ctState
				mask[e.Register] = ^uint32(0)
			default:
				delete(held, e.Register)
			}
		case *expr.Bitwise:
			if held[e.SourceRegister] == ctState && len(e.Mask) == 4 {
				held[e.DestRegister] = ctState
				mask[e.DestRegister] = mask[e.SourceRegister] & binary.NativeEndian.Uint32(e.Mask)
			} else {
				delete(held, e.DestRegister)
			}
		case *expr.Cmp:
			switch held[e.Register] {
			case l4proto:
				if e.Op != expr.CmpOpEq || !bytes.Equal(e.Data, []byte{ipProtoGRE}) {
					return false, false
				}
				gre = true
			case ctState:
				stateMatched = true
				m := mask[e.Register]
				switch {
				case e.Op == expr.CmpOpNeq && bytes.Equal(e.Data, hostU32(0)):
					untracked = m&expr.CtStateBitUNTRACKED != 0
				case e.Op == expr.CmpOpEq && len(e.Data) == 4:
					untracked = expr.CtStateBitUNTRACKED&m == binary.NativeEndian.Uint32(e.Data)
				default:
					untracked = false
				}
			}
		case *expr.Lookup:
			if held[e.SourceRegister] == ctState { // ct state { ... }: not read here
				stateMatched, untracked = true, false
			}
		case *expr.Verdict:
			accept = e.Kind == expr.VerdictAccept
		}
	}
	return gre && accept && (!stateMatched || untracked), gre && accept && !stateMatched
}

// acceptsTCPPort reports whether r accepts TCP to port (tcp dport PORT
// accept), whatever else it matches.
func acceptsTCPPort(r *nftables.Rule, port uint16) bool {
	const (
		l4proto = iota + 1
		dport
	)
	held := map[uint32]int{}
	var tcp, toPort, accept bool
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			switch {
			case e.SourceRegister:
			case e.Key == expr.MetaKeyL4PROTO:
				held[e.Register] = l4proto
			default:
				delete(held, e.Register)
			}
		case *expr.Payload:
			switch {
			case e.OperationType != expr.PayloadLoad:
			case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == 9 && e.Len == 1:
				held[e.DestRegister] = l4proto
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
				held[e.DestRegister] = dport
			default:
				delete(held, e.DestRegister)
			}
		case *expr.Cmp:
			switch held[e.Register] {
			case l4proto:
				if e.Op != expr.CmpOpEq || !bytes.Equal(e.Data, []byte{unix.IPPROTO_TCP}) {
					return false
				}
				tcp = true
			case dport:
				if e.Op != expr.CmpOpEq || !bytes.Equal(e.Data, be16(port)) {
					return false
				}
				toPort = true
			}
		case *expr.Verdict:
			accept = e.Kind == expr.VerdictAccept
		}
	}
	return tcp && toPort && accept
}
