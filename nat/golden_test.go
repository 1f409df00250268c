package nat

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The golden tests check the exact netlink messages that Open and the
// element calls send, through nftables.WithTestDial: no kernel is needed, so
// they run on every architecture, big-endian MIPS included
// (GOARCH=mips go test -c, then qemu-mips-static).
//
// How the blobs stay right on both byte orders: a netfilter message is the
// 16-byte nlmsghdr, the 4-byte nfgenmsg, and netlink attributes. The header
// (compared here as its type and flags, not as bytes) and every attribute's
// nla_len and nla_type are in host order; nftables payloads are big-endian,
// except register data that the kernel keeps in host order (ct state and ct
// status bits). Raw blobs pasted from an x86 capture, even with the nlmsghdr
// stripped, would therefore fail on MIPS at every attribute header. So each
// blob is written as a tree: attr/nest encode the attribute headers with
// binary.NativeEndian, every payload byte is spelled out (big-endian numbers
// through u32, literal bytes through raw), and h32 marks the few host-order
// payloads. TestGoldenBuilder pins the encoder itself to bytes that nft 1.0.6
// sent on x86.

// wantMsg is one expected netlink message.
type wantMsg struct {
	nft   string // the equivalent nft command
	typ   netlink.HeaderType
	flags netlink.HeaderFlags
	data  []byte // nfgenmsg and attributes
}

// Message types and flags.
func nftMsg(t int) netlink.HeaderType { return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | t) }

var (
	msgNewTable   = nftMsg(unix.NFT_MSG_NEWTABLE)
	msgDelTable   = nftMsg(unix.NFT_MSG_DELTABLE)
	msgNewChain   = nftMsg(unix.NFT_MSG_NEWCHAIN)
	msgNewRule    = nftMsg(unix.NFT_MSG_NEWRULE)
	msgDelRule    = nftMsg(unix.NFT_MSG_DELRULE)
	msgNewSet     = nftMsg(unix.NFT_MSG_NEWSET)
	msgNewSetElem = nftMsg(unix.NFT_MSG_NEWSETELEM)
	msgDelSetElem = nftMsg(unix.NFT_MSG_DELSETELEM)
)

// nftaSetExpr is NFTA_SET_EXPR from linux/netfilter/nf_tables.h (x/sys/unix
// lacks it): a stateful expression that every element of the set gets.
const nftaSetExpr = 0x11

// Verdicts and chain policies, from linux/netfilter.h.
const (
	nfDrop   = 0
	nfAccept = 1
)

const (
	fAck    = netlink.Request | netlink.Acknowledge
	fCreate = netlink.Request | netlink.Acknowledge | netlink.Create
	fRule   = netlink.Request | netlink.Acknowledge | netlink.Create | unix.NLM_F_ECHO | unix.NLM_F_APPEND
	// An element batch asks for an acknowledgement of its last message only.
	fQuiet = netlink.Request | netlink.Create
)

// attr is one netlink attribute: nla_len and nla_type in host order, the
// payload, and zero padding to 4 bytes.
func attr(typ uint16, payload ...[]byte) []byte {
	var p []byte
	for _, b := range payload {
		p = append(p, b...)
	}
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(p)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, p...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nest is an attribute holding attributes, with NLA_F_NESTED set.
func nest(typ uint16, children ...[]byte) []byte { return attr(typ|unix.NLA_F_NESTED, children...) }

// str is an attribute holding a NUL-terminated string.
func str(typ uint16, s string) []byte { return attr(typ, []byte(s+"\x00")) }

// u32 is an attribute holding a big-endian 32-bit number.
func u32(typ uint16, v uint32) []byte { return attr(typ, binary.BigEndian.AppendUint32(nil, v)) }

// raw is literal bytes written in hex; spaces are for the reader.
func raw(h string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// h32 is a 32-bit value in host order.
func h32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// value is NFTA_DATA_VALUE wrapped in the attribute typ.
func value(typ uint16, b []byte) []byte { return nest(typ, attr(unix.NFTA_DATA_VALUE, b)) }

// ex is one rule expression: its name and, unless it has none, its data.
func ex(name string, data ...[]byte) []byte {
	if len(data) == 0 {
		return nest(unix.NFTA_LIST_ELEM, str(unix.NFTA_EXPR_NAME, name))
	}
	return nest(unix.NFTA_LIST_ELEM, str(unix.NFTA_EXPR_NAME, name), nest(unix.NFTA_EXPR_DATA, data...))
}

// nfgen is the nfgenmsg header (family, version 0, big-endian resource ID)
// followed by attributes.
func nfgen(family byte, resID uint16, attrs ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16([]byte{family, unix.NFNETLINK_V0}, resID)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// ip is the start of every message about table ip pptp_alg.
func ip(attrs ...[]byte) []byte { return nfgen(unix.NFPROTO_IPV4, 0, attrs...) }

var (
	batchBegin = wantMsg{"(batch begin)", unix.NFNL_MSG_BATCH_BEGIN, netlink.Request, nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)}
	batchEnd   = wantMsg{"(batch end)", unix.NFNL_MSG_BATCH_END, netlink.Request, nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)}
)

// Expressions that several rules share, in nft --debug=netlink notation.
var (
	// [ meta load iifname => reg 1 ] [ lookup reg 1 set lan_ifaces ]
	gIifLAN = cat(
		ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_IIFNAME), u32(unix.NFTA_META_DREG, 1)),
		ex("lookup", u32(unix.NFTA_LOOKUP_SREG, 1), str(unix.NFTA_LOOKUP_SET, "lan_ifaces"), u32(unix.NFTA_LOOKUP_SET_ID, 1)),
	)
	// ip protocol 47 @th,0,32 & 0x2007ffff == 0x2001880b:
	// [ payload load 1b @ network header + 9 => reg 1 ] [ cmp eq reg 1 0x2f ]
	// [ payload load 4b @ transport header + 0 => reg 1 ]
	// [ bitwise reg 1 = ( reg 1 & 0x2007ffff ) ^ 0x00000000 ] [ cmp eq reg 1 0x2001880b ]
	gPPTPGRE = cat(
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 9), u32(unix.NFTA_PAYLOAD_LEN, 1)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("2f"))),
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 0), u32(unix.NFTA_PAYLOAD_LEN, 4)),
		ex("bitwise", u32(unix.NFTA_BITWISE_SREG, 1), u32(unix.NFTA_BITWISE_DREG, 1), u32(unix.NFTA_BITWISE_LEN, 4),
			value(unix.NFTA_BITWISE_MASK, raw("2007ffff")), value(unix.NFTA_BITWISE_XOR, raw("00000000"))),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("2001880b"))),
	)
	// tcp dport 1723:
	// [ payload load 1b @ network header + 9 => reg 1 ] [ cmp eq reg 1 0x06 ]
	// [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 1723 ]
	gTCP1723 = cat(
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 9), u32(unix.NFTA_PAYLOAD_LEN, 1)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("06"))),
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 2), u32(unix.NFTA_PAYLOAD_LEN, 2)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("06bb"))),
	)
	// redirect to :11723:
	// [ immediate reg 1 11723 ] [ redir proto_min reg 1 flags 0x2 ]
	gRedirect = cat(
		ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 1), value(unix.NFTA_IMMEDIATE_DATA, raw("2dcb"))),
		ex("redir", u32(unix.NFTA_REDIR_REG_PROTO_MIN, 1), u32(unix.NFTA_REDIR_FLAGS, unix.NF_NAT_RANGE_PROTO_SPECIFIED)),
	)
	// [ notrack ]
	gNotrack = ex("notrack")
	// iifname @lan_ifaces tcp dport 1723 fib daddr type != local:
	// [ fib daddr type => reg 1 ] [ cmp neq reg 1 local ]   the type is a host-order register, hence h32
	gRelayedControl = cat(
		gIifLAN,
		gTCP1723,
		ex("fib", u32(unix.NFTA_FIB_DREG, 1), u32(unix.NFTA_FIB_FLAGS, unix.NFTA_FIB_F_DADDR), u32(unix.NFTA_FIB_RESULT, unix.NFT_FIB_RESULT_ADDRTYPE)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_NEQ), value(unix.NFTA_CMP_DATA, h32(unix.RTN_LOCAL))),
	)
	// meta mark set meta mark | 0x10000000 (the default mark, its own mask):
	// [ meta load mark => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0xefffffff ) ^ 0x10000000 ]
	// [ meta set mark with reg 1 ]   the mark is a host-order register, hence h32
	gSetTProxyMark = cat(
		ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_MARK), u32(unix.NFTA_META_DREG, 1)),
		ex("bitwise", u32(unix.NFTA_BITWISE_SREG, 1), u32(unix.NFTA_BITWISE_DREG, 1), u32(unix.NFTA_BITWISE_LEN, 4),
			value(unix.NFTA_BITWISE_MASK, h32(0xefffffff)), value(unix.NFTA_BITWISE_XOR, h32(0x10000000))),
		ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_MARK), u32(unix.NFTA_META_SREG, 1)),
	)
	// [ immediate reg 0 accept ]
	gAccept = ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 0),
		nest(unix.NFTA_IMMEDIATE_DATA, nest(unix.NFTA_DATA_VERDICT, u32(unix.NFTA_VERDICT_CODE, nfAccept))))
	// [ immediate reg 0 drop ]
	gDrop = ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 0),
		nest(unix.NFTA_IMMEDIATE_DATA, nest(unix.NFTA_DATA_VERDICT, u32(unix.NFTA_VERDICT_CODE, nfDrop))))
	// ip protocol gre oifname "wan0" ct state untracked:
	// [ payload load 1b @ network header + 9 => reg 1 ] [ cmp eq reg 1 0x2f ]
	// [ meta load oifname => reg 1 ] [ cmp eq reg 1 "wan0" ]
	// [ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x40 ) ^ 0 ] [ cmp neq reg 1 0 ]
	// ct state is a host-order register, hence h32.
	gUntrackedGREOut = cat(
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 9), u32(unix.NFTA_PAYLOAD_LEN, 1)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("2f"))),
		ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_OIFNAME), u32(unix.NFTA_META_DREG, 1)),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ),
			value(unix.NFTA_CMP_DATA, raw("77616e30 00000000 00000000 00000000"))),
		ex("ct", u32(unix.NFTA_CT_KEY, unix.NFT_CT_STATE), u32(unix.NFTA_CT_DREG, 1)),
		ex("bitwise", u32(unix.NFTA_BITWISE_SREG, 1), u32(unix.NFTA_BITWISE_DREG, 1), u32(unix.NFTA_BITWISE_LEN, 4),
			value(unix.NFTA_BITWISE_MASK, h32(0x40)), value(unix.NFTA_BITWISE_XOR, h32(0))),
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_NEQ), value(unix.NFTA_CMP_DATA, h32(0))),
	)
)

// gSNAT is the gre_postrouting rule for WAN address addr (4 bytes, hex):
// ip protocol gre oifname "wan0" ct state untracked ip saddr != ADDR ip saddr set ADDR
func gSNAT(addr string) []byte {
	return nest(unix.NFTA_RULE_EXPRESSIONS,
		gUntrackedGREOut,
		// [ payload load 4b @ network header + 12 => reg 1 ]
		ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 12), u32(unix.NFTA_PAYLOAD_LEN, 4)),
		// [ cmp neq reg 1 ADDR ]
		ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_NEQ), value(unix.NFTA_CMP_DATA, raw(addr))),
		// [ immediate reg 1 ADDR ]
		ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 1), value(unix.NFTA_IMMEDIATE_DATA, raw(addr))),
		// [ payload write reg 1 => 4b @ network header + 12 csum_type 1 csum_off 10 ]
		ex("payload", u32(unix.NFTA_PAYLOAD_SREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
			u32(unix.NFTA_PAYLOAD_OFFSET, 12), u32(unix.NFTA_PAYLOAD_LEN, 4),
			u32(unix.NFTA_PAYLOAD_CSUM_TYPE, unix.NFT_PAYLOAD_CSUM_INET), u32(unix.NFTA_PAYLOAD_CSUM_OFFSET, 10)),
	)
}

// gGoto is the data of a verdict map element: goto CHAIN.
func gGoto(chain string) []byte {
	return nest(unix.NFTA_SET_ELEM_DATA,
		nest(unix.NFTA_DATA_VERDICT, u32(unix.NFTA_VERDICT_CODE, uint32(unix.NFT_GOTO&0xffffffff)), str(unix.NFTA_VERDICT_CHAIN, chain)))
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// gAddCall and gDeleteCall add and delete 203.0.113.2 . 0x1234 in
// gre_calls, the mark of a relayed call.
var (
	gAddCall = wantMsg{"add element ip pptp_alg gre_calls { 203.0.113.2 . 4660 }", msgNewSetElem, fQuiet, ip(
		str(unix.NFTA_SET_ELEM_LIST_SET, "gre_calls"),
		u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 6),
		str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
		nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
			value(unix.NFTA_SET_ELEM_KEY, raw("cb007102 1234 0000")), // server . server call ID
		)),
	)}
	gDeleteCall = wantMsg{"delete element ip pptp_alg gre_calls { 203.0.113.2 . 4660 }", msgDelSetElem, fCreate, ip(
		str(unix.NFTA_SET_ELEM_LIST_SET, "gre_calls"),
		u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 6),
		str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
		nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
			value(unix.NFTA_SET_ELEM_KEY, raw("cb007102 1234 0000")),
		)),
	)}
)

// goldenConfig is the router of every golden test.
var goldenConfig = Config{
	LAN:       []string{"lan0", "lan1"},
	WAN:       "wan0",
	WANAddr:   netip.MustParseAddr("203.0.113.1"), // cb007101
	RelayPort: 11723,                              // 0x2dcb
	// The router's own calls relayed too: relay_output.
	RouterCalls: true,
	RelayMark:   0x20000000,
	Owner:       true,
}

// goldenOpen is the batch Open and Reinstall send for goldenConfig.
var goldenOpen = []wantMsg{
	batchBegin,
	// No flags: it takes an older table of the name, owned or not.
	{"add table ip pptp_alg", msgNewTable, fCreate, ip(
		str(unix.NFTA_TABLE_NAME, "pptp_alg"),
	)},
	{"delete table ip pptp_alg", msgDelTable, fAck, ip(
		str(unix.NFTA_TABLE_NAME, "pptp_alg"),
		u32(unix.NFTA_TABLE_FLAGS, 0),
	)},
	{"add table ip pptp_alg { flags owner; }", msgNewTable, fCreate, ip(
		str(unix.NFTA_TABLE_NAME, "pptp_alg"),
		u32(unix.NFTA_TABLE_FLAGS, 2), // NFT_TABLE_F_OWNER
	)},
	{"add set ip pptp_alg lan_ifaces { type ifname; }", msgNewSet, fCreate, ip(
		str(unix.NFTA_SET_TABLE, "pptp_alg"),
		str(unix.NFTA_SET_NAME, "lan_ifaces"),
		u32(unix.NFTA_SET_FLAGS, 0),
		u32(unix.NFTA_SET_KEY_TYPE, 41), // ifname
		u32(unix.NFTA_SET_KEY_LEN, 16),  // IFNAMSIZ
		u32(unix.NFTA_SET_ID, 1),
		// libnftnl userdata: type 0 (key byte order), length 4, 1 (host
		// order). google/nftables writes the value little-endian on every
		// host; nft writes it in host order.
		attr(unix.NFTA_SET_USERDATA, raw("00 04 01000000")),
	)},
	{`add element ip pptp_alg lan_ifaces { "lan0", "lan1" }`, msgNewSetElem, fCreate, ip(
		str(unix.NFTA_SET_ELEM_LIST_SET, "lan_ifaces"),
		u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 1),
		str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
		nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS,
			nest(1, value(unix.NFTA_SET_ELEM_KEY, raw("6c616e30 00000000 00000000 00000000"))),
			nest(2, value(unix.NFTA_SET_ELEM_KEY, raw("6c616e31 00000000 00000000 00000000"))),
		),
	)},
	{"add map ip pptp_alg gre_in { type ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }", msgNewSet, fCreate, ip(
		str(unix.NFTA_SET_TABLE, "pptp_alg"),
		str(unix.NFTA_SET_NAME, "gre_in"),
		u32(unix.NFTA_SET_FLAGS, unix.NFT_SET_MAP),
		u32(unix.NFTA_SET_KEY_TYPE, 7<<6|13), // ipv4_addr . inet_service
		u32(unix.NFTA_SET_KEY_LEN, 8),
		u32(unix.NFTA_SET_ID, 2),
		u32(unix.NFTA_SET_DATA_TYPE, 7<<6|13), // ipv4_addr . inet_service
		u32(unix.NFTA_SET_DATA_LEN, 8),
		// NFTA_SET_EXPR: counter. google/nftables adds an empty attribute 10
		// (NFTA_SET_ELEM_PAD|NFTA_SET_ELEM_DATA) where nft sends an empty
		// nested NFTA_EXPR_DATA; the kernel ignores it.
		nest(nftaSetExpr, str(unix.NFTA_EXPR_NAME, "counter"), attr(10)),
	)},
	{"add set ip pptp_alg gre_out { type ipv4_addr . ipv4_addr . inet_service; counter; }", msgNewSet, fCreate, ip(
		str(unix.NFTA_SET_TABLE, "pptp_alg"),
		str(unix.NFTA_SET_NAME, "gre_out"),
		u32(unix.NFTA_SET_FLAGS, 0),
		u32(unix.NFTA_SET_KEY_TYPE, 7<<12|7<<6|13), // ipv4_addr . ipv4_addr . inet_service
		u32(unix.NFTA_SET_KEY_LEN, 12),
		u32(unix.NFTA_SET_ID, 3),
		nest(nftaSetExpr, str(unix.NFTA_EXPR_NAME, "counter"), attr(10)),
	)},
	{"add set ip pptp_alg gre_calls { type ipv4_addr . inet_service; }", msgNewSet, fCreate, ip(
		str(unix.NFTA_SET_TABLE, "pptp_alg"),
		str(unix.NFTA_SET_NAME, "gre_calls"),
		u32(unix.NFTA_SET_FLAGS, 0),
		u32(unix.NFTA_SET_KEY_TYPE, 7<<6|13), // ipv4_addr . inet_service
		u32(unix.NFTA_SET_KEY_LEN, 8),
		u32(unix.NFTA_SET_ID, 6),
	)},
	{"add chain ip pptp_alg gre_prerouting { type filter hook prerouting priority raw; policy accept; }", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "gre_prerouting"),
		nest(unix.NFTA_CHAIN_HOOK, u32(unix.NFTA_HOOK_HOOKNUM, unix.NF_INET_PRE_ROUTING), u32(unix.NFTA_HOOK_PRIORITY, 0xfffffed4)), // -300
		u32(unix.NFTA_CHAIN_POLICY, nfAccept),
		str(unix.NFTA_CHAIN_TYPE, "filter"),
	)},
	{"add chain ip pptp_alg gre_from_wan", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "gre_from_wan"),
	)},
	{"add chain ip pptp_alg gre_from_lan", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "gre_from_lan"),
	)},
	{"add chain ip pptp_alg gre_postrouting { type filter hook postrouting priority srcnat; policy accept; }", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "gre_postrouting"),
		nest(unix.NFTA_CHAIN_HOOK, u32(unix.NFTA_HOOK_HOOKNUM, unix.NF_INET_POST_ROUTING), u32(unix.NFTA_HOOK_PRIORITY, 100)),
		u32(unix.NFTA_CHAIN_POLICY, nfAccept),
		str(unix.NFTA_CHAIN_TYPE, "filter"),
	)},
	{"add chain ip pptp_alg relay_prerouting", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "relay_prerouting"),
	)},
	gRelayRedirectChain,
	{"add chain ip pptp_alg relay_to_lan { type filter hook output priority raw; policy accept; }", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "relay_to_lan"),
		nest(unix.NFTA_CHAIN_HOOK, u32(unix.NFTA_HOOK_HOOKNUM, unix.NF_INET_LOCAL_OUT), u32(unix.NFTA_HOOK_PRIORITY, 0xfffffed4)), // -300
		u32(unix.NFTA_CHAIN_POLICY, nfAccept),
		str(unix.NFTA_CHAIN_TYPE, "filter"),
	)},
	{"add chain ip pptp_alg relay_input { type filter hook input priority filter - 5; policy accept; }", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "relay_input"),
		nest(unix.NFTA_CHAIN_HOOK, u32(unix.NFTA_HOOK_HOOKNUM, unix.NF_INET_LOCAL_IN), u32(unix.NFTA_HOOK_PRIORITY, 0xfffffffb)), // -5
		u32(unix.NFTA_CHAIN_POLICY, nfAccept),
		str(unix.NFTA_CHAIN_TYPE, "filter"),
	)},
	{"add chain ip pptp_alg relay_output { type nat hook output priority dstnat - 5; policy accept; }", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "relay_output"),
		nest(unix.NFTA_CHAIN_HOOK, u32(unix.NFTA_HOOK_HOOKNUM, unix.NF_INET_LOCAL_OUT), u32(unix.NFTA_HOOK_PRIORITY, 0xffffff97)), // -105
		u32(unix.NFTA_CHAIN_POLICY, nfAccept),
		str(unix.NFTA_CHAIN_TYPE, "nat"),
	)},
	{"add map ip pptp_alg gre_iifs { type ifname : verdict; size 3; }", msgNewSet, fCreate, ip(
		str(unix.NFTA_SET_TABLE, "pptp_alg"),
		str(unix.NFTA_SET_NAME, "gre_iifs"),
		u32(unix.NFTA_SET_FLAGS, unix.NFT_SET_MAP),
		u32(unix.NFTA_SET_KEY_TYPE, 41), // ifname
		u32(unix.NFTA_SET_KEY_LEN, 16),  // IFNAMSIZ
		u32(unix.NFTA_SET_ID, 4),
		u32(unix.NFTA_SET_DATA_TYPE, unix.NFT_DATA_VERDICT),
		u32(unix.NFTA_SET_DATA_LEN, 0),
		nest(unix.NFTA_SET_DESC, u32(unix.NFTA_SET_DESC_SIZE, 3)),
		attr(unix.NFTA_SET_USERDATA, raw("00 04 01000000")), // key in host order, as for lan_ifaces
	)},
	{`add element ip pptp_alg gre_iifs { "wan0" : goto gre_from_wan, "lan0" : goto gre_from_lan, "lan1" : goto gre_from_lan }`,
		msgNewSetElem, fCreate, ip(
			str(unix.NFTA_SET_ELEM_LIST_SET, "gre_iifs"),
			u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 4),
			str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
			nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS,
				nest(1, value(unix.NFTA_SET_ELEM_KEY, raw("77616e30 00000000 00000000 00000000")), gGoto("gre_from_wan")),
				nest(2, value(unix.NFTA_SET_ELEM_KEY, raw("6c616e30 00000000 00000000 00000000")), gGoto("gre_from_lan")),
				nest(3, value(unix.NFTA_SET_ELEM_KEY, raw("6c616e31 00000000 00000000 00000000")), gGoto("gre_from_lan")),
			),
		)},
	{`add rule ip pptp_alg gre_prerouting ip protocol gre @th,0,32 & 0x2007ffff == 0x2001880b iifname vmap @gre_iifs`, msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "gre_prerouting"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			gPPTPGRE,
			// [ meta load iifname => reg 1 ]
			ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_IIFNAME), u32(unix.NFTA_META_DREG, 1)),
			// [ lookup reg 1 set gre_iifs dreg 0 ]
			ex("lookup", u32(unix.NFTA_LOOKUP_SREG, 1), u32(unix.NFTA_LOOKUP_DREG, 0),
				str(unix.NFTA_LOOKUP_SET, "gre_iifs"), u32(unix.NFTA_LOOKUP_SET_ID, 4)),
		),
	)},
	{`add rule ip pptp_alg gre_prerouting tcp dport 1723 goto relay_prerouting`, msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "gre_prerouting"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			// [ payload load 1b @ network header + 9 => reg 1 ] [ cmp eq reg 1 0x06 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 9), u32(unix.NFTA_PAYLOAD_LEN, 1)),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("06"))),
			// [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 1723 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 2), u32(unix.NFTA_PAYLOAD_LEN, 2)),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("06bb"))),
			// [ immediate reg 0 goto relay_prerouting ]
			ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 0), gGoto("relay_prerouting")),
		),
	)},
	{`add rule ip pptp_alg gre_from_wan ip daddr . @th,48,16 set ip saddr . @th,48,16 map @gre_in notrack accept`, msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "gre_from_wan"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			// [ payload load 4b @ network header + 12 => reg 8 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 8), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 12), u32(unix.NFTA_PAYLOAD_LEN, 4)),
			// [ payload load 2b @ transport header + 6 => reg 9 ]
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
			gNotrack,
			gAccept,
		),
	)},
	{`add rule ip pptp_alg gre_from_lan ip saddr . ip daddr . @th,48,16 @gre_out notrack accept`, msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "gre_from_lan"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			// [ payload load 4b @ network header + 12 => reg 8 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 8), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 12), u32(unix.NFTA_PAYLOAD_LEN, 4)),
			// [ payload load 4b @ network header + 16 => reg 9 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 9), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 16), u32(unix.NFTA_PAYLOAD_LEN, 4)),
			// [ payload load 2b @ transport header + 6 => reg 10 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 10), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 6), u32(unix.NFTA_PAYLOAD_LEN, 2)),
			// [ lookup reg 8 set gre_out ]
			ex("lookup", u32(unix.NFTA_LOOKUP_SREG, 8), str(unix.NFTA_LOOKUP_SET, "gre_out"), u32(unix.NFTA_LOOKUP_SET_ID, 3)),
			gNotrack,
			gAccept,
		),
	)},
	{`add rule ip pptp_alg gre_from_lan ip daddr . @th,48,16 @gre_calls drop`, msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "gre_from_lan"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			// [ payload load 4b @ network header + 16 => reg 8 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 8), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 16), u32(unix.NFTA_PAYLOAD_LEN, 4)),
			// [ payload load 2b @ transport header + 6 => reg 9 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 9), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 6), u32(unix.NFTA_PAYLOAD_LEN, 2)),
			// [ lookup reg 8 set gre_calls ]
			ex("lookup", u32(unix.NFTA_LOOKUP_SREG, 8), str(unix.NFTA_LOOKUP_SET, "gre_calls"), u32(unix.NFTA_LOOKUP_SET_ID, 6)),
			gDrop,
		),
	)},
	{`add rule ip pptp_alg gre_postrouting ip protocol gre oifname "wan0" ct state untracked ` +
		`ip saddr != 203.0.113.1 ip saddr set 203.0.113.1`, msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "gre_postrouting"),
		gSNAT("cb007101"),
	)},
	{"add rule ip pptp_alg relay_prerouting iifname @lan_ifaces tcp dport 1723 fib daddr type != local " +
		"tproxy to :1723 notrack meta mark set meta mark | 0x10000000 accept", msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "relay_prerouting"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			gRelayedControl,
			// [ immediate reg 1 1723 ] [ tproxy ip port reg 1 ]
			ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 1), value(unix.NFTA_IMMEDIATE_DATA, raw("06bb"))),
			ex("tproxy", u32(expr.NFTA_TPROXY_FAMILY, unix.NFPROTO_IPV4), u32(expr.NFTA_TPROXY_REG_PORT, 1)),
			gNotrack,
			gSetTProxyMark,
			gAccept,
		),
	)},
	{"add rule ip pptp_alg relay_prerouting iifname @lan_ifaces tcp dport 1723 fib daddr type != local " +
		"tcp flags syn / fin,syn,rst,ack tproxy to :11723 notrack meta mark set meta mark | 0x10000000", msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "relay_prerouting"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			gRelayedControl,
			// [ payload load 1b @ transport header + 13 => reg 1 ]
			// [ bitwise reg 1 = ( reg 1 & 0x17 ) ^ 0x00 ] [ cmp eq reg 1 0x02 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 13), u32(unix.NFTA_PAYLOAD_LEN, 1)),
			ex("bitwise", u32(unix.NFTA_BITWISE_SREG, 1), u32(unix.NFTA_BITWISE_DREG, 1), u32(unix.NFTA_BITWISE_LEN, 1),
				value(unix.NFTA_BITWISE_MASK, raw("17")), value(unix.NFTA_BITWISE_XOR, raw("00"))),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("02"))),
			// [ immediate reg 1 11723 ] [ tproxy ip port reg 1 ]
			ex("immediate", u32(unix.NFTA_IMMEDIATE_DREG, 1), value(unix.NFTA_IMMEDIATE_DATA, raw("2dcb"))),
			ex("tproxy", u32(expr.NFTA_TPROXY_FAMILY, unix.NFPROTO_IPV4), u32(expr.NFTA_TPROXY_REG_PORT, 1)),
			gNotrack,
			gSetTProxyMark,
		),
	)},
	{"add rule ip pptp_alg relay_to_lan tcp sport 1723 oifname @lan_ifaces fib saddr type != local notrack", msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "relay_to_lan"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			// [ payload load 1b @ network header + 9 => reg 1 ] [ cmp eq reg 1 0x06 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 9), u32(unix.NFTA_PAYLOAD_LEN, 1)),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("06"))),
			// [ payload load 2b @ transport header + 0 => reg 1 ] [ cmp eq reg 1 1723 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 0), u32(unix.NFTA_PAYLOAD_LEN, 2)),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("06bb"))),
			// [ meta load oifname => reg 1 ] [ lookup reg 1 set lan_ifaces ]
			ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_OIFNAME), u32(unix.NFTA_META_DREG, 1)),
			ex("lookup", u32(unix.NFTA_LOOKUP_SREG, 1), str(unix.NFTA_LOOKUP_SET, "lan_ifaces"), u32(unix.NFTA_LOOKUP_SET_ID, 1)),
			// [ fib saddr type => reg 1 ] [ cmp neq reg 1 local ]
			ex("fib", u32(unix.NFTA_FIB_DREG, 1), u32(unix.NFTA_FIB_FLAGS, unix.NFTA_FIB_F_SADDR), u32(unix.NFTA_FIB_RESULT, unix.NFT_FIB_RESULT_ADDRTYPE)),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_NEQ), value(unix.NFTA_CMP_DATA, h32(unix.RTN_LOCAL))),
			gNotrack,
		),
	)},
	{"add rule ip pptp_alg relay_input tcp dport 11723 ct status & dnat == 0 drop", msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "relay_input"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			// [ payload load 1b @ network header + 9 => reg 1 ] [ cmp eq reg 1 0x06 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_NETWORK_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 9), u32(unix.NFTA_PAYLOAD_LEN, 1)),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("06"))),
			// [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 11723 ]
			ex("payload", u32(unix.NFTA_PAYLOAD_DREG, 1), u32(unix.NFTA_PAYLOAD_BASE, unix.NFT_PAYLOAD_TRANSPORT_HEADER),
				u32(unix.NFTA_PAYLOAD_OFFSET, 2), u32(unix.NFTA_PAYLOAD_LEN, 2)),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, raw("2dcb"))),
			// [ ct load status => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x20 ) ^ 0 ] [ cmp eq reg 1 0 ]
			// ct status is a host-order register, hence h32.
			ex("ct", u32(unix.NFTA_CT_KEY, unix.NFT_CT_STATUS), u32(unix.NFTA_CT_DREG, 1)),
			ex("bitwise", u32(unix.NFTA_BITWISE_SREG, 1), u32(unix.NFTA_BITWISE_DREG, 1), u32(unix.NFTA_BITWISE_LEN, 4),
				value(unix.NFTA_BITWISE_MASK, h32(0x20)), value(unix.NFTA_BITWISE_XOR, h32(0))),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, h32(0))),
			gDrop,
		),
	)},
	{`add rule ip pptp_alg relay_output oifname "wan0" tcp dport 1723 meta mark & 0x20000000 == 0 redirect to :11723`, msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "relay_output"),
		nest(unix.NFTA_RULE_EXPRESSIONS,
			// [ meta load oifname => reg 1 ] [ cmp eq reg 1 "wan0" ]
			ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_OIFNAME), u32(unix.NFTA_META_DREG, 1)),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ),
				value(unix.NFTA_CMP_DATA, raw("77616e30 00000000 00000000 00000000"))),
			gTCP1723,
			// [ meta load mark => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x20000000 ) ^ 0 ] [ cmp eq reg 1 0 ]
			// The mark is a host-order register, hence h32.
			ex("meta", u32(unix.NFTA_META_KEY, unix.NFT_META_MARK), u32(unix.NFTA_META_DREG, 1)),
			ex("bitwise", u32(unix.NFTA_BITWISE_SREG, 1), u32(unix.NFTA_BITWISE_DREG, 1), u32(unix.NFTA_BITWISE_LEN, 4),
				value(unix.NFTA_BITWISE_MASK, h32(0x20000000)), value(unix.NFTA_BITWISE_XOR, h32(0))),
			ex("cmp", u32(unix.NFTA_CMP_SREG, 1), u32(unix.NFTA_CMP_OP, unix.NFT_CMP_EQ), value(unix.NFTA_CMP_DATA, h32(0))),
			gRedirect,
		),
	)},
	batchEnd,
}

// recorder stands in for the kernel: it keeps every message sent and
// answers each receive with an acknowledgement carrying errno.
type recorder struct {
	msgs  []netlink.Message
	errno unix.Errno
	fail  error // if set, receives fail with it, as a socket error would
}

func (r *recorder) dial() nftables.ConnOption {
	return nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req == nil && r.fail != nil {
			return nil, r.fail
		}
		if req == nil { // a receive with nothing queued: acknowledge
			return []netlink.Message{{
				Header: netlink.Header{Type: netlink.Error},
				Data:   binary.NativeEndian.AppendUint32(make([]byte, 0, 20), uint32(-int32(r.errno))),
			}}, nil
		}
		r.msgs = append(r.msgs, req...)
		return nil, nil
	})
}

// take returns and forgets the messages recorded so far.
func (r *recorder) take() []netlink.Message {
	m := r.msgs
	r.msgs = nil
	return m
}

// noRouting stands in for the tproxy rule and route, which are rtnetlink's,
// not nftables': golden tests touch no kernel.
type noRouting struct{}

func (noRouting) install() error        { return nil }
func (noRouting) ensure() (bool, error) { return false, nil }
func (noRouting) remove() error         { return nil }

// withoutRouting makes Planes opened until the test ends use noRouting.
func withoutRouting(t *testing.T) {
	old := openRouting
	openRouting = func(int, Config) routing { return noRouting{} }
	t.Cleanup(func() { openRouting = old })
}

func openGolden(t *testing.T) (*Plane, *recorder) {
	t.Helper()
	withoutRouting(t)
	r := &recorder{}
	p, err := Open(goldenConfig, r.dial())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p, r
}

func checkMessages(t *testing.T, got []netlink.Message, want []wantMsg) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d messages, want %d", len(got), len(want))
	}
	for i := 0; i < len(got) && i < len(want); i++ {
		g, w := got[i], want[i]
		if g.Header.Type != w.typ || g.Header.Flags != w.flags {
			t.Errorf("message %d (%s): type %#x flags %#x, want type %#x flags %#x",
				i, w.nft, uint16(g.Header.Type), uint16(g.Header.Flags), uint16(w.typ), uint16(w.flags))
		}
		if diff := cmp.Diff(dumpAttrs(w.data), dumpAttrs(g.Data)); diff != "" {
			t.Errorf("message %d (%s) (-want +got):\n%s", i, w.nft, diff)
		}
	}
}

// dumpAttrs renders a message body one attribute per line, so that a
// mismatch shows where it is. Attributes with NLA_F_NESTED are opened.
func dumpAttrs(b []byte) []string {
	if len(b) < 4 {
		return []string{fmt.Sprintf("short body % x", b)}
	}
	out := []string{fmt.Sprintf("nfgenmsg % x", b[:4])}
	var walk func(b []byte, indent string)
	walk = func(b []byte, indent string) {
		for len(b) > 0 {
			if len(b) < 4 {
				out = append(out, fmt.Sprintf("%strailing % x", indent, b))
				return
			}
			l := int(binary.NativeEndian.Uint16(b))
			typ := binary.NativeEndian.Uint16(b[2:])
			if l < 4 || l > len(b) {
				out = append(out, fmt.Sprintf("%sbad length %d: % x", indent, l, b))
				return
			}
			p := b[4:l]
			if typ&unix.NLA_F_NESTED != 0 {
				out = append(out, fmt.Sprintf("%s%d {", indent, typ&^unix.NLA_F_NESTED))
				walk(p, indent+"  ")
				out = append(out, indent+"}")
			} else {
				out = append(out, fmt.Sprintf("%s%d: % x", indent, typ, p))
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
	walk(b[4:], "")
	return out
}

func TestGoldenOpen(t *testing.T) {
	_, r := openGolden(t)
	checkMessages(t, r.take(), goldenOpen)
}

// TestGoldenUnowned checks the batch for a kernel without the owner flag:
// google/nftables' flags 0 on each table message.
func TestGoldenUnowned(t *testing.T) {
	withoutRouting(t)
	r := &recorder{}
	cfg := goldenConfig
	cfg.Owner = false
	if _, err := Open(cfg, r.dial()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	want := append([]wantMsg(nil), goldenOpen...)
	for _, i := range []int{1, 3} {
		want[i] = wantMsg{"add table ip pptp_alg", msgNewTable, fCreate, ip(
			str(unix.NFTA_TABLE_NAME, "pptp_alg"),
			u32(unix.NFTA_TABLE_FLAGS, 0),
		)}
	}
	checkMessages(t, r.take(), want)
}

func TestGoldenReinstall(t *testing.T) {
	p, r := openGolden(t)
	r.take()
	if err := p.Reinstall(); err != nil {
		t.Fatalf("Reinstall: %v", err)
	}
	checkMessages(t, r.take(), goldenOpen)
}

// TestGoldenCalls checks that each call is one batch, and its bytes.
func TestGoldenCalls(t *testing.T) {
	server := netip.MustParseAddr("203.0.113.2")      // cb007102
	client := netip.MustParseAddr("192.168.1.10")     // c0a8010a
	mapped := netip.MustParseAddr("::ffff:c0a8:010a") // the same client, as IPv4-mapped IPv6
	tests := []struct {
		name string
		call func(p *Plane) error
		want []wantMsg
	}{
		{
			name: "AddInbound",
			call: func(p *Plane) error { return p.AddInbound(server, 5, client, 7) },
			want: []wantMsg{batchBegin, {"add element ip pptp_alg gre_in { 203.0.113.2 . 5 : 192.168.1.10 . 7 }", msgNewSetElem, fCreate, ip(
				str(unix.NFTA_SET_ELEM_LIST_SET, "gre_in"),
				u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 2),
				str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
				nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
					value(unix.NFTA_SET_ELEM_KEY, raw("cb007102 0005 0000")),  // server . NAT call ID, padded
					value(unix.NFTA_SET_ELEM_DATA, raw("c0a8010a 0007 0000")), // client . client call ID, padded
				)),
			)}, batchEnd},
		},
		{
			name: "AddInboundMapped",
			call: func(p *Plane) error { return p.AddInbound(server, 5, mapped, 7) },
			want: []wantMsg{batchBegin, {"add element ip pptp_alg gre_in { 203.0.113.2 . 5 : 192.168.1.10 . 7 }", msgNewSetElem, fCreate, ip(
				str(unix.NFTA_SET_ELEM_LIST_SET, "gre_in"),
				u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 2),
				str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
				nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
					value(unix.NFTA_SET_ELEM_KEY, raw("cb007102 0005 0000")),
					value(unix.NFTA_SET_ELEM_DATA, raw("c0a8010a 0007 0000")),
				)),
			)}, batchEnd},
		},
		{
			name: "DeleteInbound",
			call: func(p *Plane) error { return p.DeleteInbound(server, 5) },
			want: []wantMsg{batchBegin, {"delete element ip pptp_alg gre_in { 203.0.113.2 . 5 }", msgDelSetElem, fCreate, ip(
				str(unix.NFTA_SET_ELEM_LIST_SET, "gre_in"),
				u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 2),
				str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
				nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
					value(unix.NFTA_SET_ELEM_KEY, raw("cb007102 0005 0000")),
				)),
			)}, batchEnd},
		},
		{
			name: "AddOutbound",
			call: func(p *Plane) error { return p.AddOutbound(client, server, 0x1234) },
			want: []wantMsg{batchBegin, gAddCall, {"add element ip pptp_alg gre_out { 192.168.1.10 . 203.0.113.2 . 4660 }", msgNewSetElem, fCreate, ip(
				str(unix.NFTA_SET_ELEM_LIST_SET, "gre_out"),
				u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 3),
				str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
				nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
					value(unix.NFTA_SET_ELEM_KEY, raw("c0a8010a cb007102 1234 0000")), // client . server . server call ID
				)),
			)}, batchEnd},
		},
		{
			name: "DeleteOutbound",
			call: func(p *Plane) error { return p.DeleteOutbound(client, server, 0x1234) },
			want: []wantMsg{batchBegin, {"delete element ip pptp_alg gre_out { 192.168.1.10 . 203.0.113.2 . 4660 }", msgDelSetElem, fCreate, ip(
				str(unix.NFTA_SET_ELEM_LIST_SET, "gre_out"),
				u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 3),
				str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
				nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
					value(unix.NFTA_SET_ELEM_KEY, raw("c0a8010a cb007102 1234 0000")),
				)),
			)}, batchEnd, batchBegin, gDeleteCall, batchEnd},
		},
		{
			name: "SetWANAddr",
			call: func(p *Plane) error { return p.SetWANAddr(netip.MustParseAddr("198.51.100.7")) },
			want: []wantMsg{
				batchBegin,
				{"flush chain ip pptp_alg gre_postrouting", msgDelRule, fAck, ip(
					str(unix.NFTA_RULE_TABLE, "pptp_alg"),
					str(unix.NFTA_RULE_CHAIN, "gre_postrouting"),
				)},
				{`add rule ip pptp_alg gre_postrouting ip protocol gre oifname "wan0" ct state untracked ` +
					`ip saddr != 198.51.100.7 ip saddr set 198.51.100.7`, msgNewRule, fRule, ip(
					str(unix.NFTA_RULE_TABLE, "pptp_alg"),
					str(unix.NFTA_RULE_CHAIN, "gre_postrouting"),
					gSNAT("c6336407"),
				)},
				batchEnd,
			},
		},
		{
			name: "SetWANAddrNone",
			call: func(p *Plane) error { return p.SetWANAddr(netip.Addr{}) },
			want: []wantMsg{
				batchBegin,
				{"flush chain ip pptp_alg gre_postrouting", msgDelRule, fAck, ip(
					str(unix.NFTA_RULE_TABLE, "pptp_alg"),
					str(unix.NFTA_RULE_CHAIN, "gre_postrouting"),
				)},
				{`add rule ip pptp_alg gre_postrouting ip protocol gre oifname "wan0" ct state untracked drop`, msgNewRule, fRule, ip(
					str(unix.NFTA_RULE_TABLE, "pptp_alg"),
					str(unix.NFTA_RULE_CHAIN, "gre_postrouting"),
					nest(unix.NFTA_RULE_EXPRESSIONS, gUntrackedGREOut, gDrop),
				)},
				batchEnd,
			},
		},
		{
			name: "Close",
			call: func(p *Plane) error { return p.Close() },
			want: []wantMsg{batchBegin, {"delete table ip pptp_alg", msgDelTable, fAck, ip(
				str(unix.NFTA_TABLE_NAME, "pptp_alg"),
				u32(unix.NFTA_TABLE_FLAGS, 0),
			)}, batchEnd},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, r := openGolden(t)
			r.take()
			if err := tt.call(p); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			checkMessages(t, r.take(), tt.want)
		})
	}
}

// TestGoldenErrors checks what the calls make of kernel errors.
func TestGoldenErrors(t *testing.T) {
	server := netip.MustParseAddr("203.0.113.2")
	client := netip.MustParseAddr("192.168.1.10")
	p, r := openGolden(t)

	r.errno = unix.ENOENT // no such element, or no table at all
	if err := p.DeleteInbound(server, 5); err != nil {
		t.Errorf("DeleteInbound of a missing element: %v, want nil", err)
	}
	if err := p.DeleteOutbound(client, server, 9); err != nil {
		t.Errorf("DeleteOutbound of a missing element: %v, want nil", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close of a missing table: %v, want nil", err)
	}
	err := p.AddInbound(server, 5, client, 7)
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("AddInbound without a table: %v, want ENOENT", err)
	}
	if want := "nat: add inbound 203.0.113.2/5: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("AddInbound error %q, want prefix %q", err, want)
	}
	if ok, err := p.Installed(); ok || err != nil {
		t.Errorf("Installed without a table: %v, %v; want false, nil", ok, err)
	}

	r.errno = unix.EEXIST // the key is there with another value
	err = p.AddInbound(server, 5, client, 8)
	if !errors.Is(err, unix.EEXIST) {
		t.Errorf("AddInbound over another value: %v, want EEXIST", err)
	}
	r.errno = unix.EPERM
	if err := p.DeleteOutbound(client, server, 9); !errors.Is(err, unix.EPERM) {
		t.Errorf("DeleteOutbound without permission: %v, want EPERM", err)
	}
	if _, err := p.Installed(); !errors.Is(err, unix.EPERM) {
		t.Errorf("Installed without permission: %v, want EPERM", err)
	}
	r.take()

	// Nothing is sent for an address the table cannot hold.
	if err := p.AddInbound(netip.MustParseAddr("2001:db8::1"), 5, client, 7); !errors.Is(err, errNotIPv4) {
		t.Errorf("AddInbound from IPv6: %v, want errNotIPv4", err)
	}
	if err := p.AddOutbound(client, netip.Addr{}, 5); !errors.Is(err, errNotIPv4) {
		t.Errorf("AddOutbound to no address: %v, want errNotIPv4", err)
	}
	if err := p.SetWANAddr(netip.MustParseAddr("2001:db8::1")); !errors.Is(err, errNotIPv4) {
		t.Errorf("SetWANAddr(IPv6): %v, want errNotIPv4", err)
	}
	if m := r.take(); len(m) != 0 {
		t.Errorf("%d messages sent for bad addresses, want none", len(m))
	}
}

// TestSocketReset checks that the lasting socket is replaced after an error
// that may leave replies unread, and kept after an errno from the kernel.
func TestSocketReset(t *testing.T) {
	server := netip.MustParseAddr("203.0.113.2")
	client := netip.MustParseAddr("192.168.1.10")
	p, r := openGolden(t)
	first := p.conn

	r.errno = unix.EEXIST
	if err := p.AddInbound(server, 5, client, 7); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("AddInbound: %v, want EEXIST", err)
	}
	if p.conn != first {
		t.Error("socket replaced after an errno from the kernel")
	}
	r.errno = 0

	r.fail = os.NewSyscallError("recvmsg", unix.ENOBUFS)
	if err := p.AddInbound(server, 5, client, 7); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("AddInbound: %v, want ENOBUFS", err)
	}
	if p.conn == first {
		t.Error("socket kept after ENOBUFS")
	}
	r.fail = nil
	r.take()
	if err := p.AddInbound(server, 5, client, 7); err != nil {
		t.Fatalf("AddInbound on the new socket: %v", err)
	}
	checkMessages(t, r.take()[1:2], []wantMsg{{"add element ip pptp_alg gre_in { 203.0.113.2 . 5 : 192.168.1.10 . 7 }", msgNewSetElem, fCreate, ip(
		str(unix.NFTA_SET_ELEM_LIST_SET, "gre_in"),
		u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 2),
		str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
		nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
			value(unix.NFTA_SET_ELEM_KEY, raw("cb007102 0005 0000")),
			value(unix.NFTA_SET_ELEM_DATA, raw("c0a8010a 0007 0000")),
		)),
	)}})
}

func TestConfigCheck(t *testing.T) {
	good := goldenConfig
	tests := []struct {
		name string
		edit func(c *Config)
		ok   bool
	}{
		{"good", func(c *Config) {}, true},
		{"no WAN address yet", func(c *Config) { c.WANAddr = netip.Addr{} }, true},
		{"IPv4-mapped WAN address", func(c *Config) { c.WANAddr = netip.MustParseAddr("::ffff:203.0.113.1") }, true},
		{"IPv6 WAN address", func(c *Config) { c.WANAddr = netip.MustParseAddr("2001:db8::1") }, false},
		{"no WAN", func(c *Config) { c.WAN = "" }, false},
		{"WAN name too long", func(c *Config) { c.WAN = "0123456789abcdef" }, false},
		{"no LAN", func(c *Config) { c.LAN = nil }, false},
		{"empty LAN name", func(c *Config) { c.LAN = []string{"lan0", ""} }, false},
		{"WAN in LAN", func(c *Config) { c.LAN = []string{"lan0", "wan0"} }, false},
		{"no relay port", func(c *Config) { c.RelayPort = 0 }, false},
		{"table name too long", func(c *Config) { c.Table = strings.Repeat("t", 256) }, false},
		{"tproxy mark within its mask", func(c *Config) { c.TProxyMark, c.TProxyMask = 0x100, 0xf00 }, true},
		{"tproxy mark outside its mask", func(c *Config) { c.TProxyMark, c.TProxyMask = 0x1100, 0xf00 }, false},
		{"relay mark carries the tproxy mark", func(c *Config) { c.RouterCalls, c.RelayMark = true, 0x30000000 }, false},
		{"kernel's main table", func(c *Config) { c.RouteTable = 254 }, false},
		{"rule after the main table's", func(c *Config) { c.RulePriority = 32766 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			c.LAN = append([]string(nil), good.LAN...)
			tt.edit(&c)
			got, err := c.check()
			if (err == nil) != tt.ok {
				t.Fatalf("check() error %v, want ok=%v", err, tt.ok)
			}
			if err == nil && got.Table != DefaultTable {
				t.Errorf("Table = %q, want %q", got.Table, DefaultTable)
			}
			if err == nil && got.WANAddr.IsValid() && !got.WANAddr.Is4() {
				t.Errorf("WANAddr = %v, want plain IPv4", got.WANAddr)
			}
		})
	}
	r := &recorder{}
	if _, err := Open(Config{}, r.dial()); err == nil || !strings.HasPrefix(err.Error(), "nat: open: ") {
		t.Errorf("Open(Config{}) = %v, want a nat: open error", err)
	}
	if len(r.msgs) != 0 {
		t.Errorf("Open with a bad Config sent %d messages", len(r.msgs))
	}
}

// TestGoldenBuilder pins the golden encoder to bytes that nft 1.0.6 sent on
// x86 (nft --debug=mnl -f, which prints each attribute header decoded: "len
// 13, type 1" is 0d00 0100 on the wire there). The capture is little-endian,
// so this runs only on little-endian hosts; on big-endian hosts the encoder's
// attribute headers are host order by construction.
func TestGoldenBuilder(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the reference capture is little-endian")
	}
	tests := []struct {
		nft     string
		fromNft []byte
		encoded []byte
	}{
		{
			nft: "add table ip pptp_alg",
			fromNft: raw("02000000" + // nfgenmsg: AF_INET, version 0, res_id 0
				"0d000100 70707470 5f616c67 00000000" + // NFTA_TABLE_NAME "pptp_alg"
				"08000200 00000000"), // NFTA_TABLE_FLAGS 0
			encoded: ip(str(unix.NFTA_TABLE_NAME, "pptp_alg"), u32(unix.NFTA_TABLE_FLAGS, 0)),
		},
		{
			// nft orders the attributes differently from google/nftables.
			nft: "add chain ip pptp_ref gre_prerouting { type filter hook prerouting priority raw; policy accept; }",
			fromNft: raw("02000000" +
				"0d000100 70707470 5f726566 00000000" + // NFTA_CHAIN_TABLE "pptp_ref"
				"13000300 6772655f 70726572 6f757469 6e670000" + // NFTA_CHAIN_NAME "gre_prerouting"
				"0b000700 66696c74 65720000" + // NFTA_CHAIN_TYPE "filter"
				"08000500 00000001" + // NFTA_CHAIN_POLICY accept
				"14000480 08000100 00000000 08000200 fffffed4"), // NFTA_CHAIN_HOOK { prerouting, -300 }
			encoded: ip(
				str(unix.NFTA_CHAIN_TABLE, "pptp_ref"),
				str(unix.NFTA_CHAIN_NAME, "gre_prerouting"),
				str(unix.NFTA_CHAIN_TYPE, "filter"),
				u32(unix.NFTA_CHAIN_POLICY, nfAccept),
				nest(unix.NFTA_CHAIN_HOOK, u32(unix.NFTA_HOOK_HOOKNUM, unix.NF_INET_PRE_ROUTING), u32(unix.NFTA_HOOK_PRIORITY, 0xfffffed4)),
			),
		},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.fromNft, tt.encoded); diff != "" {
			t.Errorf("%s: encoder (-nft +encoder):\n%s", tt.nft, diff)
		}
	}
}

// TestGoldenCallMark: AddOutbound adds the call's gre_calls element in its
// own batch, every time (adding calls again repairs a flushed set), and
// DeleteOutbound deletes it in a batch of its own after gre_out's.
func TestGoldenCallMark(t *testing.T) {
	server := netip.MustParseAddr("203.0.113.2")
	client := netip.MustParseAddr("192.168.1.10")
	p, r := openGolden(t)
	r.take()
	gOut := func(typ netlink.HeaderType, nft string) wantMsg {
		return wantMsg{nft, typ, fCreate, ip(
			str(unix.NFTA_SET_ELEM_LIST_SET, "gre_out"),
			u32(unix.NFTA_SET_ELEM_LIST_SET_ID, 3),
			str(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg"),
			nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nest(1,
				value(unix.NFTA_SET_ELEM_KEY, raw("c0a8010a cb007102 1234 0000")),
			)),
		)}
	}
	add := []wantMsg{batchBegin, gAddCall, gOut(msgNewSetElem, "add element ip pptp_alg gre_out { 192.168.1.10 . 203.0.113.2 . 4660 }"), batchEnd}
	for _, s := range []struct {
		name string
		call func() error
		want []wantMsg
	}{
		{"add", func() error { return p.AddOutbound(client, server, 0x1234) }, add},
		{"add again", func() error { return p.AddOutbound(client, server, 0x1234) }, add},
		{"delete", func() error { return p.DeleteOutbound(client, server, 0x1234) }, []wantMsg{
			batchBegin, gOut(msgDelSetElem, "delete element ip pptp_alg gre_out { 192.168.1.10 . 203.0.113.2 . 4660 }"), batchEnd,
			batchBegin, gDeleteCall, batchEnd,
		}},
	} {
		if err := s.call(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		t.Run(s.name, func(t *testing.T) { checkMessages(t, r.take(), s.want) })
	}
}

// goldenMsg is the message of goldenOpen whose nft command starts with
// prefix.
func goldenMsg(t *testing.T, prefix string) wantMsg {
	t.Helper()
	for _, m := range goldenOpen {
		if strings.HasPrefix(m.nft, prefix) {
			return m
		}
	}
	t.Fatalf("no message %q in goldenOpen", prefix)
	return wantMsg{}
}

var (
	gRelayRedirectChain = wantMsg{"add chain ip pptp_alg relay_redirect { type nat hook prerouting priority dstnat - 5; policy accept; }", msgNewChain, fCreate, ip(
		str(unix.NFTA_CHAIN_TABLE, "pptp_alg"),
		str(unix.NFTA_CHAIN_NAME, "relay_redirect"),
		nest(unix.NFTA_CHAIN_HOOK, u32(unix.NFTA_HOOK_HOOKNUM, unix.NF_INET_PRE_ROUTING), u32(unix.NFTA_HOOK_PRIORITY, 0xffffff97)), // -105
		u32(unix.NFTA_CHAIN_POLICY, nfAccept),
		str(unix.NFTA_CHAIN_TYPE, "nat"),
	)}
	gRelayRedirectRule = wantMsg{"add rule ip pptp_alg relay_redirect iifname @lan_ifaces tcp dport 1723 fib daddr type != local redirect to :11723", msgNewRule, fRule, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "relay_redirect"),
		nest(unix.NFTA_RULE_EXPRESSIONS, gRelayedControl, gRedirect),
	)}
	gFlushRelayPre = wantMsg{"flush chain ip pptp_alg relay_prerouting", msgDelRule, fAck, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "relay_prerouting"),
	)}
	gFlushRelayRedirect = wantMsg{"flush chain ip pptp_alg relay_redirect", msgDelRule, fAck, ip(
		str(unix.NFTA_RULE_TABLE, "pptp_alg"),
		str(unix.NFTA_RULE_CHAIN, "relay_redirect"),
	)}
)

// goldenOpenRedirect is goldenOpen with Config.Redirect: relay_redirect's
// redirect rule instead of tproxy's rule for new connections.
func goldenOpenRedirect() []wantMsg {
	var out []wantMsg
	for _, m := range goldenOpen {
		if strings.HasPrefix(m.nft, "add rule ip pptp_alg relay_prerouting") && strings.Contains(m.nft, "tcp flags syn") {
			m = gRelayRedirectRule
		}
		out = append(out, m)
	}
	return out
}

// TestGoldenRedirect checks the ruleset with LAN control connections taken
// by the NAT redirect, opened so and switched to and from at run time.
func TestGoldenRedirect(t *testing.T) {
	withoutRouting(t)
	established := goldenMsg(t, "add rule ip pptp_alg relay_prerouting iifname @lan_ifaces tcp dport 1723 fib daddr type != local tproxy to :1723")
	tproxyNew := goldenMsg(t, "add rule ip pptp_alg relay_prerouting iifname @lan_ifaces tcp dport 1723 fib daddr type != local tcp flags syn")

	t.Run("Open", func(t *testing.T) {
		r := &recorder{}
		cfg := goldenConfig
		cfg.Redirect = true
		p, err := Open(cfg, r.dial())
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		checkMessages(t, r.take(), goldenOpenRedirect())
		if err := p.Reinstall(); err != nil {
			t.Fatalf("Reinstall: %v", err)
		}
		checkMessages(t, r.take(), goldenOpenRedirect())
	})
	t.Run("SetRedirect", func(t *testing.T) {
		p, r := openGolden(t)
		r.take()
		if err := p.SetRedirect(true); err != nil {
			t.Fatalf("SetRedirect(true): %v", err)
		}
		checkMessages(t, r.take(), []wantMsg{batchBegin, gFlushRelayPre, gFlushRelayRedirect, established, gRelayRedirectRule, batchEnd})
		if err := p.SetRedirect(true); err != nil {
			t.Fatalf("SetRedirect(true) again: %v", err)
		}
		if m := r.take(); len(m) != 0 {
			t.Errorf("SetRedirect(true) again sent %d messages, want none", len(m))
		}
		if err := p.Reinstall(); err != nil {
			t.Fatalf("Reinstall: %v", err)
		}
		checkMessages(t, r.take(), goldenOpenRedirect())
		if err := p.SetRedirect(false); err != nil {
			t.Fatalf("SetRedirect(false): %v", err)
		}
		checkMessages(t, r.take(), []wantMsg{batchBegin, gFlushRelayPre, gFlushRelayRedirect, established, tproxyNew, batchEnd})
	})
}
