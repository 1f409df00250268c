package nat

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The fast path's batch in full, as golden_test.go checks the ip table's:
// each message's type, flags and every byte, written as attribute trees so
// that it holds on big-endian MIPS too (see golden_test.go).

// netdev is the start of every message about table netdev pptp_alg.
func netdev(attrs ...[]byte) []byte { return nfgen(unix.NFPROTO_NETDEV, 0, attrs...) }

// fRuleNoEcho is how the fast path's rules go: ruleMsg does not ask for
// the rule back, as google/nftables does.
const fRuleNoEcho = netlink.Request | netlink.Acknowledge | netlink.Create | unix.NLM_F_APPEND

// goldenLinks is what the fast path of goldenConfig is built for: the WAN
// with index 7 and MTU 1492, lan0 with index 3 and MTU 1500, lan1 with index
// 9 and MTU 1400.
var goldenLinks = fastLinks{
	wan:      link{Index: 7, MTU: 1492},
	lan:      []link{{Index: 3, MTU: 1500}, {Index: 9, MTU: 1400}},
	lanNames: []string{"lan0", "lan1"},
	wanAddr:  netip.MustParseAddr("203.0.113.1"),
}

// gFastGRE is what the fast path takes, for an out interface MTU of mtu
// (2 bytes, hex):
// meta protocol ip ip protocol gre @th,0,32 & 0x2007ffff == 0x2001880b
// ip frag-off & 0x3fff == 0 ip ttl > 1 ip length <= MTU
func gFastGRE(mtu string) []byte {
	return cat(
		// [ meta load protocol => reg 1 ] [ cmp eq reg 1 0x0800 ]
		ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_PROTOCOL), u32(unix.NFTA_META_DREG, 1)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("0800"))),
		gPPTPGRE,
		// [ payload load 2b @ network header + 6 => reg 1 ]
		// [ bitwise reg 1 = ( reg 1 & 0x3fff ) ^ 0 ] [ cmp eq reg 1 0 ]
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 6), u32(unix.NFTA_PAYLOAD_LEN, 2)),
		ex("bitwise", u32(unix.NFTA_BITWISE_SREG, 1), u32(unix.NFTA_BITWISE_DREG, 1), u32(unix.NFTA_BITWISE_LEN, 2),
			value(unix.NFTA_BITWISE_MASK, raw("3fff")), value(unix.NFTA_BITWISE_XOR, raw("0000"))),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("0000"))),
		// [ payload load 1b @ network header + 8 => reg 1 ] [ cmp gt reg 1 1 ]
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 8), u32(unix.NFTA_PAYLOAD_LEN, 1)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_GT), value(unix.NFTA_CMP_DATA, raw("01"))),
		// [ payload load 2b @ network header + 2 => reg 1 ] [ cmp lte reg 1 MTU ]
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 2), u32(unix.NFTA_PAYLOAD_LEN, 2)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_LTE), value(unix.NFTA_CMP_DATA, raw(mtu))),
	)
}

// gFwd is fwd ip to <reg addr> device <reg dev>.
func gFwd(addr, dev uint32) []byte {
	return ex("fwd", u32(nftaFwdSregDev, dev), u32(nftaFwdSregAddr, addr), u32(nftaFwdNfproto, unix.NFPROTO_IPV4))
}

// gIngress is an ingress chain of the fast path on device dev.
func gIngress(name, dev string) wantMsg {
	return wantMsg{"add chain netdev pptp_alg " + name + " { type filter hook ingress device " + dev + " priority filter; policy accept; }",
		msgNewChain, fCreate, netdev(
			str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
			str(unix.NFTA_CHAIN_NAME, name),
			nest(unix.NFTA_CHAIN_HOOK, u32(unix.NFTA_HOOK_HOOKNUM, unix.NF_NETDEV_INGRESS), u32(unix.NFTA_HOOK_PRIORITY, 0),
				str(unix.NFTA_HOOK_DEV, dev)),
			u32(unix.NFTA_CHAIN_POLICY, nfAccept),
			str(unix.NFTA_CHAIN_TYPE, "filter"),
		)}
}

// gFastOutbound is the rule of the ingress chain of LAN lan: GRE of a call
// of its client leaves the WAN (index 7, MTU 1492) from 203.0.113.1.
func gFastOutbound(lan string) wantMsg {
	return wantMsg{"add rule netdev pptp_alg lan_ingress_" + lan + " <fast gre, MTU 1492> " +
		"ip saddr . ip daddr . @th,48,16 map @gre_out => <neighbour> ip saddr set 203.0.113.1 fwd ip to <neighbour> device wan0",
		msgNewRule, fRuleNoEcho, netdev(
			str(unix.NFTA_RULE_TABLE, "pptp_alg"),
			str(unix.NFTA_RULE_CHAIN, "lan_ingress_"+lan),
			nest(unix.NFTA_RULE_EXPRESSIONS,
				gFastGRE("05d4"), // 1492
				// [ payload load 4b @ network header + 12 => reg 8 ]   ip saddr
				ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 8), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
					u32(unix.NFTA_PAYLOAD_OFFSET, 12), u32(unix.NFTA_PAYLOAD_LEN, 4)),
				// [ payload load 4b @ network header + 16 => reg 9 ]   ip daddr
				ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 9), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
					u32(unix.NFTA_PAYLOAD_OFFSET, 16), u32(unix.NFTA_PAYLOAD_LEN, 4)),
				// [ payload load 2b @ transport header + 6 => reg 10 ] server call ID
				ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 10), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
					u32(unix.NFTA_PAYLOAD_OFFSET, 6), u32(unix.NFTA_PAYLOAD_LEN, 2)),
				// [ lookup reg 8 set gre_out dreg 11 ]   the next hop toward the server
				ex("lookup", u32(unix.NFTA_LOOKUP_SREG, 8), u32(unix.NFTA_LOOKUP_DREG, 11),
					str(unix.NFTA_LOOKUP_SET, "gre_out"), u32(unix.NFTA_LOOKUP_SET_ID, 3)),
				// [ immediate reg 8 203.0.113.1 ]
				ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 8), value(unix.NFTA_IMMEDIATE_DATA, raw("cb007101"))),
				// [ payload write reg 8 => 4b @ network header + 12 csum_type 1 csum_off 10 ]
				ex("payload", u32(unix.NFTA_PAYLOAD_SREG, 8), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
					u32(unix.NFTA_PAYLOAD_OFFSET, 12), u32(unix.NFTA_PAYLOAD_LEN, 4),
					u32(unix.NFTA_PAYLOAD_CSUM_TYPE, unix.NFT_PAYLOAD_CSUM_INET), u32(unix.NFTA_PAYLOAD_CSUM_OFFSET, 10)),
				// [ immediate reg 12 7 ]   the WAN's index, a host-order register
				ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 12), value(unix.NFTA_IMMEDIATE_DATA, h32(7))),
				gFwd(11, 12),
			),
		)}
}

// goldenFastStart is the fast path's batch up to its rules: the table
// replaced, its maps and its chains. google/nftables sends no userdata for
// these maps (no key in host order).
var goldenFastStart = []wantMsg{
	{"add table netdev pptp_alg", msgNewTable, fCreate, netdev(
		str(unix.NFTA_TABLE_NAME, "pptp_alg"),
	)},
	{"delete table netdev pptp_alg", msgDelTable, fAck, netdev(
		str(unix.NFTA_TABLE_NAME, "pptp_alg"),
		u32(unix.NFTA_TABLE_FLAGS, 0),
	)},
	{"add table netdev pptp_alg { flags owner; }", msgNewTable, fCreate, netdev(
		str(unix.NFTA_TABLE_NAME, "pptp_alg"),
		u32(unix.NFTA_TABLE_FLAGS, 2),
	)},
	{"add map netdev pptp_alg gre_in { type ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }", msgNewSet, fCreate, netdev(
		str(unix.NFTA_SET_TABLE, "pptp_alg"),
		str(unix.NFTA_SET_NAME, "gre_in"),
		u32(unix.NFTA_SET_FLAGS, unix.NFT_SET_MAP),
		u32(unix.NFTA_SET_KEY_TYPE, 7<<6|13), // ipv4_addr . inet_service
		u32(unix.NFTA_SET_KEY_LEN, 8),
		u32(unix.NFTA_SET_ID, 2),
		u32(unix.NFTA_SET_DATA_TYPE, 7<<6|13), // ipv4_addr . inet_service
		u32(unix.NFTA_SET_DATA_LEN, 8),
		nest(nftaSetExpr, str(unix.NFTA_EXPR_NAME, "counter"), attr(10)), // as in the ip table
	)},
	{"add map netdev pptp_alg gre_out { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr; counter; }", msgNewSet, fCreate, netdev(
		str(unix.NFTA_SET_TABLE, "pptp_alg"),
		str(unix.NFTA_SET_NAME, "gre_out"),
		u32(unix.NFTA_SET_FLAGS, unix.NFT_SET_MAP),
		u32(unix.NFTA_SET_KEY_TYPE, 7<<12|7<<6|13), // ipv4_addr . ipv4_addr . inet_service
		u32(unix.NFTA_SET_KEY_LEN, 12),
		u32(unix.NFTA_SET_ID, 3),
		u32(unix.NFTA_SET_DATA_TYPE, 7), // ipv4_addr: the next hop
		u32(unix.NFTA_SET_DATA_LEN, 4),
		nest(nftaSetExpr, str(unix.NFTA_EXPR_NAME, "counter"), attr(10)),
	)},
	{"add map netdev pptp_alg lan_oif { type ipv4_addr : iface_index; }", msgNewSet, fCreate, netdev(
		str(unix.NFTA_SET_TABLE, "pptp_alg"),
		str(unix.NFTA_SET_NAME, "lan_oif"),
		u32(unix.NFTA_SET_FLAGS, unix.NFT_SET_MAP),
		u32(unix.NFTA_SET_KEY_TYPE, 7), // ipv4_addr
		u32(unix.NFTA_SET_KEY_LEN, 4),
		u32(unix.NFTA_SET_ID, 5),
		u32(unix.NFTA_SET_DATA_TYPE, 20), // iface_index
		u32(unix.NFTA_SET_DATA_LEN, 4),
	)},
	gIngress("wan_ingress", "wan0"),
	gIngress("lan_ingress_lan0", "lan0"),
	gIngress("lan_ingress_lan1", "lan1"),
}

// goldenFastInbound is the rule of the WAN's ingress chain: GRE from a
// server, for a call with an element, to its client, by the LAN's smallest
// MTU (1400).
var goldenFastInbound = wantMsg{"add rule netdev pptp_alg wan_ingress <fast gre, MTU 1400> " +
	"ip daddr . @th,48,16 set ip saddr . @th,48,16 map @gre_in fwd ip to ip daddr device ip daddr map @lan_oif",
	msgNewRule, fRuleNoEcho, netdev(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "wan_ingress"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			gFastGRE("0578"), // 1400
			// [ payload load 4b @ network header + 12 => reg 8 ]   ip saddr
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 8), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 12), u32(unix.NFTA_PAYLOAD_LEN, 4)),
			// [ payload load 2b @ transport header + 6 => reg 9 ]  NAT call ID
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 9), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 6), u32(unix.NFTA_PAYLOAD_LEN, 2)),
			// [ lookup reg 8 set gre_in dreg 8 ]
			ex("lookup", u32(unix.NFTA_LOOKUP_SREG, 8), u32(unix.NFTA_LOOKUP_DREG, 8),
				str(unix.NFTA_LOOKUP_SET, "gre_in"), u32(unix.NFTA_LOOKUP_SET_ID, 2)),
			// [ payload write reg 8 => 4b @ network header + 16 csum_type 1 csum_off 10 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_SREG, 8), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 16), u32(unix.NFTA_PAYLOAD_LEN, 4),
				u32(unix.NFTA_PAYLOAD_CSUM_TYPE, unix.NFT_PAYLOAD_CSUM_INET), u32(unix.NFTA_PAYLOAD_CSUM_OFFSET, 10)),
			// [ payload write reg 9 => 2b @ transport header + 6 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_SREG, 9), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 6), u32(unix.NFTA_PAYLOAD_LEN, 2)),
			// [ payload load 4b @ network header + 16 => reg 10 ]  the client, now ip daddr
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 10), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 16), u32(unix.NFTA_PAYLOAD_LEN, 4)),
			// [ lookup reg 10 set lan_oif dreg 11 ]
			ex("lookup", u32(unix.NFTA_LOOKUP_SREG, 10), u32(unix.NFTA_LOOKUP_DREG, 11),
				str(unix.NFTA_LOOKUP_SET, "lan_oif"), u32(unix.NFTA_LOOKUP_SET_ID, 5)),
			gFwd(10, 11),
		),
	)}

// TestGoldenFastPath checks the whole batch that installs the fast path,
// with a WAN address and without one (outbound GRE is then left to the ip
// table, which drops it), and with a LAN interface absent (its chain and
// rule are left out).
func TestGoldenFastPath(t *testing.T) {
	noAddr := goldenLinks
	noAddr.wanAddr = netip.Addr{}
	oneLAN := goldenLinks
	oneLAN.lan, oneLAN.lanNames = goldenLinks.lan[:1], goldenLinks.lanNames[:1]
	// The inbound rule takes lan0's MTU alone.
	oneLANInbound := goldenFastInbound
	oneLANInbound.data = bytesReplace(t, goldenFastInbound.data, gFastGRE("0578"), gFastGRE("05dc"))
	for _, tc := range []struct {
		name  string
		links fastLinks
		want  []wantMsg
	}{
		{"with a WAN address", goldenLinks, append(append([]wantMsg{}, goldenFastStart...),
			goldenFastInbound, gFastOutbound("lan0"), gFastOutbound("lan1"))},
		{"without one", noAddr, append(append([]wantMsg{}, goldenFastStart...), goldenFastInbound)},
		{"lan1 absent", oneLAN, append(append([]wantMsg{}, goldenFastStart[:len(goldenFastStart)-1]...),
			oneLANInbound, gFastOutbound("lan0"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := goldenConfig.check() // the table name
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := newFastObjects(cfg).installBatch(tc.links, cfg.Owner)
			if err != nil {
				t.Fatal(err)
			}
			checkMessages(t, msgs, tc.want)
		})
	}
}

// bytesReplace replaces the one occurrence of old in b.
func bytesReplace(t *testing.T, b, old, repl []byte) []byte {
	t.Helper()
	i := bytes.Index(b, old)
	if i < 0 {
		t.Fatal("bytesReplace: not found")
	}
	return cat(b[:i:i], repl, b[i+len(old):])
}
