package nat

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The policy routing that delivers tproxied control connections to the
// relay. relay_prerouting marks the packets it hands to the relay's socket
// (tproxy); their destination is the server, so without a route of their
// own they would be forwarded. One rule and one route, in the daemon's own
// routing table:
//
//	ip rule add pref PRIORITY fwmark MARK/MASK lookup TABLE
//	ip route add local 0.0.0.0/0 dev lo table TABLE
//
// Both live in the routing tables, not in nftables, so `nft flush ruleset`
// leaves them alone.

// Defaults for Config's tproxy fields. The mark is a bit that OpenWrt's
// fw4, mwan3 (0x3f00), pbr (0xff0000) and the relay's own mark leave alone;
// the priority comes before mwan3's fwmark rules (2001 and up) and the main
// table (32766); mwan3 numbers its tables from 1 by interface.
const (
	DefaultTProxyMark   = 0x10000000
	DefaultRouteTable   = 1723
	DefaultRulePriority = 1723
)

// fibRuleHdrLen is the size of struct fib_rule_hdr, which starts the body
// of every rule message.
const fibRuleHdrLen = 12

// Rule attributes (linux/fib_rules.h), which x/sys/unix lacks by these names.
const (
	fraPriority = 6  // FRA_PRIORITY
	fraFwmark   = 10 // FRA_FWMARK
	fraTable    = 15 // FRA_TABLE
	fraFwmask   = 16 // FRA_FWMASK
	frActToTbl  = 1  // FR_ACT_TO_TBL
)

// routing is what a Plane does with its rule and route. openRouting makes
// the real one; tests that have no kernel (golden bytes) swap in a fake.
type routing interface {
	install() error
	ensure() (added bool, err error)
	remove() error
}

var openRouting = func(netns int, cfg Config) routing { return newTProxyRoute(netns, cfg) }

// tproxyRoute is the rule and route of one Plane, in the network namespace
// netns (an fd; 0 for our own).
type tproxyRoute struct {
	netns                       int
	mark, mask, table, priority uint32
}

func newTProxyRoute(netns int, cfg Config) tproxyRoute {
	return tproxyRoute{netns: netns, mark: cfg.TProxyMark, mask: cfg.TProxyMask, table: cfg.RouteTable, priority: cfg.RulePriority}
}

// install adds the rule and the route, first removing any left at the same
// priority and table by an earlier run.
func (r tproxyRoute) install() error {
	if err := r.remove(); err != nil {
		return err
	}
	_, err := r.ensure()
	return err
}

// ensure adds the rule and the route if either is missing, and reports
// whether it added anything. Adding is exclusive: one that exists is left
// as it is and sends no notification.
func (r tproxyRoute) ensure() (added bool, err error) {
	for _, m := range []struct {
		typ  netlink.HeaderType
		body func() ([]byte, error)
		what string
	}{
		{unix.RTM_NEWRULE, r.ruleMsg, "rule"},
		{unix.RTM_NEWROUTE, r.routeMsg, "route"},
	} {
		b, err := m.body()
		if err != nil {
			return added, err
		}
		_, err = rtExecute(r.netns, m.typ, netlink.Create|netlink.Excl|netlink.Acknowledge, b)
		switch {
		case errors.Is(err, unix.EEXIST):
		case err != nil:
			return added, fmt.Errorf("nat: add tproxy %s (%s): %w", m.what, r, err)
		default:
			added = true
		}
	}
	return added, nil
}

// remove deletes the rule and the route. Ones already gone are not an
// error. A rule is deleted by its priority and table alone, so that a
// rule of an earlier run with another mark goes too.
func (r tproxyRoute) remove() error {
	for range 16 { // there is one, unless something added copies
		b, err := r.ruleKey()
		if err != nil {
			return err
		}
		_, err = rtExecute(r.netns, unix.RTM_DELRULE, netlink.Acknowledge, b)
		if errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("nat: delete tproxy rule (%s): %w", r, err)
		}
	}
	b, err := r.routeMsg()
	if err != nil {
		return err
	}
	_, err = rtExecute(r.netns, unix.RTM_DELROUTE, netlink.Acknowledge, b)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("nat: delete tproxy route (%s): %w", r, err)
	}
	return nil
}

func (r tproxyRoute) String() string {
	return fmt.Sprintf("pref %d fwmark %#x/%#x lookup %d", r.priority, r.mark, r.mask, r.table)
}

// ruleKey is a rule message naming the priority and table only: what a
// deletion matches on.
func (r tproxyRoute) ruleKey() ([]byte, error) {
	return r.rule([]netlink.Attribute{
		{Type: fraPriority, Data: binary.NativeEndian.AppendUint32(nil, r.priority)},
		{Type: fraTable, Data: binary.NativeEndian.AppendUint32(nil, r.table)},
	})
}

// ruleMsg is the whole rule: pref PRIORITY fwmark MARK/MASK lookup TABLE.
func (r tproxyRoute) ruleMsg() ([]byte, error) {
	return r.rule([]netlink.Attribute{
		{Type: fraPriority, Data: binary.NativeEndian.AppendUint32(nil, r.priority)},
		{Type: fraFwmark, Data: binary.NativeEndian.AppendUint32(nil, r.mark)},
		{Type: fraFwmask, Data: binary.NativeEndian.AppendUint32(nil, r.mask)},
		{Type: fraTable, Data: binary.NativeEndian.AppendUint32(nil, r.table)},
	})
}

func (r tproxyRoute) rule(attrs []netlink.Attribute) ([]byte, error) {
	a, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return nil, err
	}
	// struct fib_rule_hdr: family, dst_len, src_len, tos, table (the
	// attribute holds it), two reserved, action, then 32-bit flags.
	hdr := []byte{unix.AF_INET, 0, 0, 0, 0, 0, 0, frActToTbl, 0, 0, 0, 0}
	return append(hdr, a...), nil
}

// routeMsg is: local 0.0.0.0/0 dev lo table TABLE.
func (r tproxyRoute) routeMsg() ([]byte, error) {
	a, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.RTA_TABLE, Data: binary.NativeEndian.AppendUint32(nil, r.table)},
		{Type: unix.RTA_OIF, Data: binary.NativeEndian.AppendUint32(nil, loIndex)},
	})
	if err != nil {
		return nil, err
	}
	// struct rtmsg: family, dst_len 0, src_len, tos, table (the attribute
	// holds it), protocol, scope host, type local, flags.
	hdr := []byte{unix.AF_INET, 0, 0, 0, 0, unix.RTPROT_STATIC, unix.RT_SCOPE_HOST, unix.RTN_LOCAL, 0, 0, 0, 0}
	return append(hdr, a...), nil
}

// loIndex is the loopback interface's index, 1 in every network namespace.
const loIndex = 1
