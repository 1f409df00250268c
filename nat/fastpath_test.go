package nat

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestFastBatch checks the fast path's batch without a kernel, so that it
// runs on big-endian MIPS too: the messages in order, each rule's
// expressions, and the bytes whose order matters (fwd's registers are
// big-endian attributes; an interface index in a register is host order).
func TestFastBatch(t *testing.T) {
	o := newFastObjects(Config{Table: "pptp_alg", WAN: "wan", LAN: []string{"br-lan", "br-guest"}})
	links := fastLinks{
		wan:     link{Index: 7, MTU: 1492},
		lan:     []link{{Index: 3, MTU: 1500}, {Index: 9, MTU: 1400}},
		wanAddr: netip.MustParseAddr("203.0.113.1"),
	}
	match := "meta cmp payload cmp payload bitwise cmp payload bitwise cmp payload cmp payload cmp "
	inbound := match + "payload payload lookup payload payload payload lookup fwd"
	outbound := match + "payload payload payload lookup immediate payload immediate fwd"
	for _, tc := range []struct {
		name    string
		wanAddr netip.Addr
		want    []string // per message: its type, and for a rule its chain and expressions
	}{
		{"with a WAN address", links.wanAddr, []string{
			"newtable", "deltable", "newtable", "newset", "newset", "newset", "newchain", "newchain", "newchain",
			"newrule wan_ingress: " + inbound,
			"newrule lan_ingress_br-lan: " + outbound,
			"newrule lan_ingress_br-guest: " + outbound,
		}},
		// Outbound GRE is left to the ip table, which drops it.
		{"without one", netip.Addr{}, []string{
			"newtable", "deltable", "newtable", "newset", "newset", "newset", "newchain", "newchain", "newchain",
			"newrule wan_ingress: " + inbound,
		}},
	} {
		l := links
		l.wanAddr = tc.wanAddr
		msgs, err := o.installBatch(l)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for _, m := range msgs {
			got = append(got, describe(t, m))
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
		for _, m := range msgs {
			if m.Header.Type != msgNewRule {
				continue
			}
			wan := bytes.Contains(m.Data, str(unix.NFTA_RULE_CHAIN, chainWANIngress))
			fwd := nest(unix.NFTA_LIST_ELEM, str(unix.NFTA_EXPR_NAME, "fwd"), nest(unix.NFTA_EXPR_DATA,
				u32(nftaFwdSregDev, reg11), u32(nftaFwdSregAddr, reg10), u32(nftaFwdNfproto, unix.NFPROTO_IPV4)))
			// The smallest MTU of the side the packet leaves by.
			mtu := nest(unix.NFTA_CMP_DATA, attr(unix.NFTA_DATA_VALUE, []byte{0x05, 0x78})) // 1400
			if !wan {
				fwd = nest(unix.NFTA_LIST_ELEM, str(unix.NFTA_EXPR_NAME, "fwd"), nest(unix.NFTA_EXPR_DATA,
					u32(nftaFwdSregDev, reg12), u32(nftaFwdSregAddr, reg11), u32(nftaFwdNfproto, unix.NFPROTO_IPV4)))
				mtu = nest(unix.NFTA_CMP_DATA, attr(unix.NFTA_DATA_VALUE, []byte{0x05, 0xd4})) // 1492
				ifindex := nest(unix.NFTA_IMMEDIATE_DATA, attr(unix.NFTA_DATA_VALUE, h32(7)))
				if !bytes.Contains(m.Data, ifindex) {
					t.Errorf("%s: outbound rule without the WAN's index in host order", tc.name)
				}
			}
			if !bytes.Contains(m.Data, fwd) {
				t.Errorf("%s: rule (wan %v) without its fwd expression", tc.name, wan)
			}
			if !bytes.Contains(m.Data, mtu) {
				t.Errorf("%s: rule (wan %v) without its MTU", tc.name, wan)
			}
		}
	}
}

// describe names a message by its type and, for a rule, its chain and the
// names of its expressions.
func describe(t *testing.T, m netlink.Message) string {
	t.Helper()
	names := map[netlink.HeaderType]string{
		msgNewTable: "newtable", msgDelTable: "deltable", msgNewSet: "newset", msgNewChain: "newchain", msgNewRule: "newrule",
	}
	s, ok := names[m.Header.Type]
	if !ok {
		return m.Header.Type.String()
	}
	if m.Header.Type != msgNewRule {
		return s
	}
	var chain string
	var exprs []string
	for b := m.Data[4:]; len(b) > 0; {
		typ, v, rest, err := nextAttr(b)
		if err != nil {
			t.Fatal(err)
		}
		b = rest
		switch typ {
		case unix.NFTA_RULE_CHAIN:
			chain = strings.TrimSuffix(string(v), "\x00")
		case unix.NFTA_RULE_EXPRESSIONS:
			for len(v) > 0 {
				_, el, r, err := nextAttr(v)
				if err != nil {
					t.Fatal(err)
				}
				v = r
				_, name, _, err := nextAttr(el) // NFTA_EXPR_NAME comes first
				if err != nil {
					t.Fatal(err)
				}
				exprs = append(exprs, strings.TrimSuffix(string(name), "\x00"))
			}
		}
	}
	return s + " " + chain + ": " + strings.Join(exprs, " ")
}
