package nat

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// These tests send GRE through the router lab (newRouter) with the fast
// path on, and tell which table carried each packet by the element
// counters: the netdev table's or the ip table's.

// The lab's one call.
const (
	fastNATID    = 0x4001 // what the server was told
	fastClientID = 0x0101 // the LAN host's own call ID
	fastServerID = 0x7777 // the server's call ID
)

// Waits: for a packet that should arrive, and for one that should not.
const (
	arriveWait = 2 * time.Second
	absentWait = 200 * time.Millisecond
)

// fastLab is the router lab with a Plane whose fast path is on, and raw
// sockets on both ends.
type fastLab struct {
	router
	p       *Plane
	lanGRE  *rawSocket // GRE that reaches the LAN host
	srvGRE  *rawSocket // GRE that reaches the server; sends with the kernel's IP header
	srvICMP *rawSocket
	srvRaw  *rawSocket // sends whole IP packets from the server (IPPROTO_RAW)
}

func newFastLab(t *testing.T) *fastLab {
	t.Helper()
	requireKernel(t)
	requireNft(t)
	r := newRouter(t)
	l := &fastLab{
		router:  r,
		p:       openFastPlane(t, r, []string{"rlan0"}, true),
		lanGRE:  openRaw(t, r.lan, unix.IPPROTO_GRE),
		srvGRE:  openRaw(t, r.server, unix.IPPROTO_GRE),
		srvICMP: openRaw(t, r.server, unix.IPPROTO_ICMP),
		srvRaw:  openRaw(t, r.server, unix.IPPROTO_RAW),
	}
	if on, why := l.p.FastPath(); !on {
		t.Fatalf("FastPath() = off (%v) after Open with FastPath", why)
	}
	return l
}

// openFastPlane opens a Plane in the router for the LANs given, closed when
// the test ends.
func openFastPlane(t *testing.T, r router, lan []string, fast bool) *Plane {
	t.Helper()
	p, err := Open(Config{LAN: lan, WAN: "rwan0", WANAddr: wanAddr, RelayPort: relayPort, FastPath: fast},
		nftables.WithNetNSFd(r.rtr.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// addCall adds the lab's call both ways, and its fast path elements at
// once rather than when the adder gets to them.
func (l *fastLab) addCall(t *testing.T) {
	t.Helper()
	if err := l.p.AddInbound(serverIP, fastNATID, lanHostIP, fastClientID); err != nil {
		t.Fatal(err)
	}
	if err := l.p.AddOutbound(lanHostIP, serverIP, fastServerID); err != nil {
		t.Fatal(err)
	}
}

// deleteCall deletes the lab's call both ways.
func (l *fastLab) deleteCall(t *testing.T) {
	t.Helper()
	if err := l.p.DeleteInbound(serverIP, fastNATID); err != nil {
		t.Fatal(err)
	}
	if err := l.p.DeleteOutbound(lanHostIP, serverIP, fastServerID); err != nil {
		t.Fatal(err)
	}
}

// checkFastPath calls CheckFastPath and wants rebuilt.
func (l *fastLab) checkFastPath(t *testing.T, want bool) {
	t.Helper()
	rebuilt, err := l.p.CheckFastPath()
	if err != nil || rebuilt != want {
		t.Fatalf("CheckFastPath() = %v, %v; want %v, nil", rebuilt, err, want)
	}
}

// greSeen is what a received GRE packet says, for comparing whole.
type greSeen struct {
	Src, Dst string
	TTL      uint8
	CsumOK   bool
	Total    int    // IP total length
	Key      uint16 // the call ID
	Rest     string // the GRE packet after the call ID, hex
}

// seen takes a received packet apart.
func seen(t *testing.T, b []byte) greSeen {
	t.Helper()
	pkt, err := parseIP(b)
	if err != nil {
		t.Fatal(err)
	}
	key, err := greKey(pkt)
	if err != nil {
		t.Fatal(err)
	}
	return greSeen{pkt.src.String(), pkt.dst.String(), pkt.ttl, pkt.csumOK, pkt.total, key, fmt.Sprintf("% x", pkt.payload[8:])}
}

// expect is what a GRE packet should look like where it arrives: gre as
// sent, with its call ID replaced by key, alone in an IP packet.
func expect(src, dst netip.Addr, ttl uint8, key uint16, gre []byte) greSeen {
	return greSeen{src.String(), dst.String(), ttl, true, 20 + len(gre), key, fmt.Sprintf("% x", gre[8:])}
}

// receive wants one GRE packet on s that looks like want.
func receive(t *testing.T, s *rawSocket, what string, want greSeen) {
	t.Helper()
	b, err := s.recv(arriveWait)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if diff := cmp.Diff(want, seen(t, b)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

// noGRE wants nothing on s.
func noGRE(t *testing.T, s *rawSocket, what string) {
	t.Helper()
	if b, err := s.recv(absentWait); err == nil {
		t.Errorf("%s: got % x, want nothing", what, b)
	}
}

// ipPacketBytes is an IPv4 packet of GRE from src to dst as a raw
// IPPROTO_RAW socket sends it: the kernel fills in the total length and the
// header checksum. frag is the flags and fragment offset field.
func ipPacketBytes(src, dst netip.Addr, ttl uint8, id, frag uint16, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = ttl
	b[9] = unix.IPPROTO_GRE
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, payload...)
}

const (
	ipMF             = 0x2000 // the more-fragments flag of the IPv4 header
	icmpTimeExceeded = 11     // ICMP type (RFC 792)
)

// nftStdout runs nft in ns and returns its standard output, failing the
// test if nft says anything on standard error (such as a rule it cannot
// print back).
func nftStdout(tb testing.TB, ns *netns, args ...string) string {
	tb.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, "nft"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		// An admin's `nft list ruleset` must print our tables cleanly.
		tb.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// elemCounters reads a set's or map's element counters with nft -j, keyed
// as nft prints the keys ("203.0.113.2 . 16385").
func elemCounters(tb testing.TB, ns *netns, family, kind, name string) map[string]Counter {
	tb.Helper()
	out := nftStdout(tb, ns, "-j", "list", kind, family, "pptp_alg", name)
	var doc struct {
		Nftables []map[string]struct {
			Elem []json.RawMessage
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		tb.Fatalf("nft -j list %s %s pptp_alg %s: %v\n%s", kind, family, name, err, out)
	}
	type elem struct {
		Elem struct {
			Val     any
			Counter *struct{ Packets, Bytes uint64 }
		}
	}
	m := map[string]Counter{}
	for _, obj := range doc.Nftables {
		for _, raw := range obj[kind].Elem {
			// A map's element is [key, value]; a set's is the key.
			var kv []json.RawMessage
			if json.Unmarshal(raw, &kv) == nil && len(kv) == 2 {
				raw = kv[0]
			}
			var e elem
			if err := json.Unmarshal(raw, &e); err != nil {
				tb.Fatalf("nft -j element %s: %v", raw, err)
			}
			if e.Elem.Counter == nil {
				tb.Fatalf("nft -j: element %s of %s %s has no counter", raw, family, name)
			}
			m[jsonElem(e.Elem.Val)] = Counter{e.Elem.Counter.Packets, e.Elem.Counter.Bytes}
		}
	}
	return m
}

// callCounts are the lab's call's element counters in both tables.
type callCounts struct {
	FastIn, FastOut, IPIn, IPOut Counter
}

var (
	inKeyText  = fmt.Sprintf("%v . %d", serverIP, fastNATID)
	outKeyText = fmt.Sprintf("%v . %v . %d", lanHostIP, serverIP, fastServerID)
)

// counts reads the call's counters; an element that is not there counts
// nothing.
func (l *fastLab) counts(t *testing.T) callCounts {
	t.Helper()
	return callCounts{
		FastIn:  elemCounters(t, l.rtr, "netdev", "map", mapGREIn)[inKeyText],
		FastOut: elemCounters(t, l.rtr, "netdev", "map", setGREOut)[outKeyText],
		IPIn:    elemCounters(t, l.rtr, "ip", "map", mapGREIn)[inKeyText],
		IPOut:   elemCounters(t, l.rtr, "ip", "set", setGREOut)[outKeyText],
	}
}

// elements lists the element keys of the four sets, for checking which
// tables hold the call.
func (l *fastLab) elements(t *testing.T) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	for _, s := range []struct{ family, kind, name string }{
		{"netdev", "map", mapGREIn}, {"netdev", "map", setGREOut},
		{"ip", "map", mapGREIn}, {"ip", "set", setGREOut},
	} {
		keys := []string{}
		for k := range elemCounters(t, l.rtr, s.family, s.kind, s.name) {
			keys = append(keys, k)
		}
		m[s.family+" "+s.name] = keys
	}
	return m
}

// callElements is what elements says when both tables hold the call, or
// only the ip table does.
func callElements(fast bool) map[string][]string {
	m := map[string][]string{
		"netdev gre_in": {}, "netdev gre_out": {},
		"ip gre_in": {inKeyText}, "ip gre_out": {outKeyText},
	}
	if fast {
		m["netdev gre_in"], m["netdev gre_out"] = []string{inKeyText}, []string{outKeyText}
	}
	return m
}

// sendIn sends gre from the server to the WAN address with the kernel's IP
// header (TTL 64) and wants it at the LAN host, translated.
func (l *fastLab) sendIn(t *testing.T, gre []byte) {
	t.Helper()
	l.srvGRE.send(t, wanAddr.As4(), gre)
	receive(t, l.lanGRE, "LAN host, inbound GRE", expect(serverIP, lanHostIP, 63, fastClientID, gre))
}

// sendOut sends gre from the LAN host to the server and wants it at the
// server, from src.
func (l *fastLab) sendOut(t *testing.T, gre []byte, src netip.Addr) {
	t.Helper()
	l.lanGRE.send(t, serverIP.As4(), gre)
	receive(t, l.srvGRE, "server, outbound GRE", expect(src, serverIP, 63, fastServerID, gre))
}

func TestFastPathInstalled(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	r := newRouter(t)
	r.rtr.ip(t, "link", "add", "rlan1", "type", "veth", "peer", "name", "rlan1p")
	r.rtr.ip(t, "link", "set", "rlan1", "up")

	p := openFastPlane(t, r, []string{"rlan0", "rlan1"}, true)
	if on, why := p.FastPath(); !on || why != nil {
		t.Fatalf("FastPath() = %v, %v; want true, nil", on, why)
	}
	var doc struct {
		Nftables []map[string]struct{ Name, Chain string }
	}
	list := nftStdout(t, r.rtr, "-j", "list", "table", "netdev", "pptp_alg")
	if err := json.Unmarshal([]byte(list), &doc); err != nil {
		t.Fatalf("nft -j list table netdev pptp_alg: %v\n%s", err, list)
	}
	got := map[string]int{} // "map NAME": 0, "chain NAME": its rules
	for _, obj := range doc.Nftables {
		if o, ok := obj["map"]; ok {
			got["map "+o.Name] = 0
		}
		if o, ok := obj["chain"]; ok {
			got["chain "+o.Name] += 0
		}
		if o, ok := obj["rule"]; ok {
			got["chain "+o.Chain]++
		}
	}
	want := map[string]int{
		"map gre_in": 0, "map gre_out": 0, "map lan_oif": 0,
		"chain wan_ingress": 1, "chain lan_ingress_rlan0": 1, "chain lan_ingress_rlan1": 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("netdev table: objects and rules per chain (-want +got):\n%s", diff)
	}

	// Each chain hooks its device's ingress, and nft prints every rule
	// back without an error.
	chains := []struct {
		chain, dev, rule string
	}{
		{"wan_ingress", "rwan0",
			"ip frag-off & 16383 == 0 ip ttl > 1 ip length <= 1500 ip daddr set ip saddr . @th,48,16 map @gre_in @th,48,16 set @th,48,16 fwd ip to ip daddr device ip daddr map @lan_oif"},
		{"lan_ingress_rlan0", "rlan0",
			"ip saddr set 203.0.113.1 fwd ip to ip saddr . ip daddr . @th,48,16 map @gre_out device \"rwan0\""},
		{"lan_ingress_rlan1", "rlan1",
			"ip saddr set 203.0.113.1 fwd ip to ip saddr . ip daddr . @th,48,16 map @gre_out device \"rwan0\""},
	}
	for _, c := range chains {
		list := nftStdout(t, r.rtr, "list", "chain", "netdev", "pptp_alg", c.chain)
		hook := fmt.Sprintf("type filter hook ingress device %q priority filter; policy accept;", c.dev)
		for _, s := range []string{hook, "ip protocol gre @th,0,32 & 0x2007ffff == 0x2001880b", c.rule} {
			if !strings.Contains(list, s) {
				t.Errorf("chain %s lacks %q:\n%s", c.chain, s, list)
			}
		}
	}

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if tables := r.rtr.exec(t, "nft", "list", "tables"); strings.Contains(tables, "pptp_alg") {
		t.Errorf("tables after Close:\n%s", tables)
	}

	// Without FastPath: the ip table alone.
	off := openFastPlane(t, r, []string{"rlan0", "rlan1"}, false)
	if on, why := off.FastPath(); on || why == nil {
		t.Errorf("FastPath() = %v, %v with FastPath false; want false and a reason", on, why)
	}
	tables := r.rtr.exec(t, "nft", "list", "tables")
	if !strings.Contains(tables, "table ip pptp_alg") || strings.Contains(tables, "netdev") {
		t.Errorf("tables with FastPath false:\n%s", tables)
	}
	if rebuilt, err := off.CheckFastPath(); rebuilt || err != nil {
		t.Errorf("CheckFastPath() with FastPath false = %v, %v; want false, nil", rebuilt, err)
	}
}

func TestFastPathForwards(t *testing.T) {
	l := newFastLab(t)
	l.addCall(t)
	if diff := cmp.Diff(callElements(true), l.elements(t)); diff != "" {
		t.Fatalf("elements after adding the call (-want +got):\n%s", diff)
	}

	// The fast path's fwd decrements the TTL as routing would, with the
	// checksum updated (expect wants it valid).
	in := greV1(fastNATID, 1, "lcp-conf-req")
	l.sendIn(t, in)
	in2 := greV1(fastNATID, 2, strings.Repeat("i", 300))
	l.sendIn(t, in2)
	out := greV1(fastServerID, 1, "lcp-conf-ack")
	l.sendOut(t, out, wanAddr)

	want := callCounts{
		FastIn:  Counter{2, uint64(20 + len(in) + 20 + len(in2))},
		FastOut: Counter{1, uint64(20 + len(out))},
	}
	if diff := cmp.Diff(want, l.counts(t)); diff != "" {
		t.Errorf("element counters (-want +got):\n%s", diff)
	}
	// Counters reports a call's GRE whichever table carried it.
	ins, outs := map[InKey]Counter{}, map[OutKey]Counter{}
	if err := l.p.Counters(ins, outs); err != nil {
		t.Fatalf("Counters: %v", err)
	}
	wantIn := map[InKey]Counter{{serverIP, fastNATID}: want.FastIn}
	wantOut := map[OutKey]Counter{{lanHostIP, serverIP, fastServerID}: want.FastOut}
	if diff := cmp.Diff(wantIn, ins); diff != "" {
		t.Errorf("Counters in (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantOut, outs); diff != "" {
		t.Errorf("Counters out (-want +got):\n%s", diff)
	}
}

// TestFastPathLeavesToIPTable sends the server's GRE for the call in
// packets that the fast path must leave alone; the ip table must count
// them and treat them as it does without a fast path.
func TestFastPathLeavesToIPTable(t *testing.T) {
	gre := greV1(fastNATID, 1, strings.Repeat("f", 52)) // 64 bytes
	big := greV1(fastNATID, 1, strings.Repeat("b", 1001-20-12))
	atMTU := greV1(fastNATID, 1, strings.Repeat("m", 1000-20-12))
	tests := []struct {
		name    string
		lanMTU  int      // the router's LAN MTU is lowered to this first
		gre     []byte   // the GRE packet the server sends
		ttl     uint8    // its TTL
		fragAt  int      // if not 0, sent in two fragments, the first with this many bytes of gre
		arrives bool     // the LAN host gets it, translated, TTL one less
		icmp    [2]uint8 // if not zero, the type and code of the ICMP the server gets back
		want    callCounts
	}{
		{
			name: "control: a plain packet takes the fast path", gre: gre, ttl: 64, arrives: true,
			want: callCounts{FastIn: Counter{1, 84}},
		},
		{
			name: "TTL 1", gre: gre, ttl: 1, icmp: [2]uint8{icmpTimeExceeded, 0},
			want: callCounts{IPIn: Counter{1, 84}},
		},
		{
			name: "TTL 2 is forwarded", gre: gre, ttl: 2, arrives: true,
			want: callCounts{FastIn: Counter{1, 84}},
		},
		{
			// The router's conntrack (on for the relay's rules) reassembles
			// before the ip table, which counts one packet.
			name: "two fragments", gre: gre, ttl: 64, fragAt: 48, arrives: true,
			want: callCounts{IPIn: Counter{1, 84}},
		},
		{
			// DF is clear: the router fragments, the LAN host reassembles.
			name: "larger than the LAN MTU", lanMTU: 1000, gre: big, ttl: 64, arrives: true,
			want: callCounts{IPIn: Counter{1, 1001}},
		},
		{
			name: "as large as the LAN MTU", lanMTU: 1000, gre: atMTU, ttl: 64, arrives: true,
			want: callCounts{FastIn: Counter{1, 1000}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newFastLab(t)
			l.addCall(t)
			if tt.lanMTU != 0 {
				l.rtr.ip(t, "link", "set", "rlan0", "mtu", fmt.Sprint(tt.lanMTU))
				l.checkFastPath(t, true)
				l.addCall(t)
				if diff := cmp.Diff(callElements(true), l.elements(t)); diff != "" {
					t.Fatalf("elements after the MTU change and adding again (-want +got):\n%s", diff)
				}
			}
			var pkts [][]byte
			if tt.fragAt == 0 {
				pkts = append(pkts, ipPacketBytes(serverIP, wanAddr, tt.ttl, 0x1234, 0, tt.gre))
			} else {
				pkts = append(pkts,
					ipPacketBytes(serverIP, wanAddr, tt.ttl, 0x1234, ipMF, tt.gre[:tt.fragAt]),
					ipPacketBytes(serverIP, wanAddr, tt.ttl, 0x1234, uint16(tt.fragAt/8), tt.gre[tt.fragAt:]))
			}
			for _, b := range pkts {
				l.srvRaw.send(t, wanAddr.As4(), b)
			}
			if tt.arrives {
				receive(t, l.lanGRE, "LAN host", expect(serverIP, lanHostIP, tt.ttl-1, fastClientID, tt.gre))
			} else {
				noGRE(t, l.lanGRE, "LAN host")
			}
			if tt.icmp != [2]uint8{} {
				checkICMP(t, l.srvICMP, tt.icmp)
			}
			if diff := cmp.Diff(tt.want, l.counts(t)); diff != "" {
				t.Errorf("element counters (-want +got):\n%s", diff)
			}
		})
	}
}

// checkICMP wants an ICMP error of typeCode on s that quotes the server's
// GRE.
func checkICMP(t *testing.T, s *rawSocket, typeCode [2]uint8) {
	t.Helper()
	deadline := time.Now().Add(arriveWait)
	for {
		b, err := s.recv(time.Until(deadline))
		if err != nil {
			t.Fatalf("server: no ICMP type %d code %d: %v", typeCode[0], typeCode[1], err)
		}
		pkt, err := parseIP(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(pkt.payload) < 8 || [2]uint8(pkt.payload[:2]) != typeCode {
			continue // the LAN host's GRE may draw other errors
		}
		inner, err := parseIP(pkt.payload[8:])
		if err != nil {
			t.Fatalf("ICMP type %d quotes %v", typeCode[0], err)
		}
		if pkt.src != wanAddr || inner.src != serverIP || inner.proto != unix.IPPROTO_GRE {
			t.Errorf("ICMP type %d from %v quotes %v proto %d; want from %v, quoting GRE from %v",
				typeCode[0], pkt.src, inner.src, inner.proto, wanAddr, serverIP)
		}
		return
	}
}

func TestCheckFastPath(t *testing.T) {
	l := newFastLab(t)
	l.addCall(t)
	l.checkFastPath(t, false)
	l.checkFastPath(t, false)
	in := greV1(fastNATID, 1, "through")
	out := greV1(fastServerID, 1, "through")
	inBytes, outBytes := uint64(20+len(in)), uint64(20+len(out))

	// A route change empties the fast path; GRE goes by the ip table until
	// the call is added again.
	l.rtr.ip(t, "route", "add", "192.0.2.0/24", "via", serverIP.String())
	l.checkFastPath(t, true)
	l.checkFastPath(t, false)
	if diff := cmp.Diff(callElements(false), l.elements(t)); diff != "" {
		t.Errorf("elements after the rebuild (-want +got):\n%s", diff)
	}
	l.sendIn(t, in)
	l.sendOut(t, out, wanAddr)
	want := callCounts{IPIn: Counter{1, inBytes}, IPOut: Counter{1, outBytes}}
	if diff := cmp.Diff(want, l.counts(t)); diff != "" {
		t.Errorf("counters before adding the call again (-want +got):\n%s", diff)
	}
	l.addCall(t)
	l.sendIn(t, in)
	l.sendOut(t, out, wanAddr)
	want.FastIn, want.FastOut = Counter{1, inBytes}, Counter{1, outBytes}
	if diff := cmp.Diff(want, l.counts(t)); diff != "" {
		t.Errorf("counters after adding the call again (-want +got):\n%s", diff)
	}

	// Someone deletes the netdev table.
	l.rtr.exec(t, "nft", "delete", "table", "netdev", "pptp_alg")
	l.checkFastPath(t, true)
	if on, why := l.p.FastPath(); !on || why != nil {
		t.Fatalf("FastPath() after the rebuild = %v, %v", on, why)
	}
	l.addCall(t)
	if diff := cmp.Diff(callElements(true), l.elements(t)); diff != "" {
		t.Errorf("elements after the table came back (-want +got):\n%s", diff)
	}
	l.sendIn(t, in)
	want.FastIn = Counter{1, inBytes} // a new element
	want.FastOut = Counter{}
	if diff := cmp.Diff(want, l.counts(t)); diff != "" {
		t.Errorf("counters after the table came back (-want +got):\n%s", diff)
	}

	// A new WAN address: the fast path is rebuilt at once and reported by
	// the next check; outbound GRE leaves from the new address.
	newAddr := netip.MustParseAddr("198.51.100.7")
	l.rtr.ip(t, "addr", "add", newAddr.String()+"/32", "dev", "rwan0")
	if err := l.p.SetWANAddr(newAddr); err != nil {
		t.Fatalf("SetWANAddr: %v", err)
	}
	l.checkFastPath(t, true)
	l.checkFastPath(t, false)
	if diff := cmp.Diff(callElements(false), l.elements(t)); diff != "" {
		t.Errorf("elements after SetWANAddr (-want +got):\n%s", diff)
	}
	l.addCall(t)
	l.sendOut(t, out, newAddr)
	l.sendOut(t, out, newAddr)
	want.FastIn, want.FastOut = Counter{}, Counter{2, 2 * outBytes}
	if diff := cmp.Diff(want, l.counts(t)); diff != "" {
		t.Errorf("counters after SetWANAddr (-want +got):\n%s", diff)
	}
	lan := l.rtr.exec(t, "nft", "list", "chain", "netdev", "pptp_alg", "lan_ingress_rlan0")
	if !strings.Contains(lan, "ip saddr set 198.51.100.7 fwd") {
		t.Errorf("lan_ingress_rlan0 after SetWANAddr:\n%s", lan)
	}
}

// TestFastPathMissingStillWorks: without the netdev table, calls are still
// added and deleted, and their GRE goes by the ip table.
func TestFastPathMissingStillWorks(t *testing.T) {
	l := newFastLab(t)
	l.rtr.exec(t, "nft", "delete", "table", "netdev", "pptp_alg")
	l.addCall(t)
	in := greV1(fastNATID, 1, "slow in")
	out := greV1(fastServerID, 1, "slow out")
	l.sendIn(t, in)
	l.sendOut(t, out, wanAddr)
	ip := func(kind, name string) map[string]Counter { return elemCounters(t, l.rtr, "ip", kind, name) }
	if got, want := ip("map", mapGREIn), (map[string]Counter{inKeyText: {1, uint64(20 + len(in))}}); !cmp.Equal(got, want) {
		t.Errorf("ip gre_in counters = %v, want %v", got, want)
	}
	if got, want := ip("set", setGREOut), (map[string]Counter{outKeyText: {1, uint64(20 + len(out))}}); !cmp.Equal(got, want) {
		t.Errorf("ip gre_out counters = %v, want %v", got, want)
	}

	l.deleteCall(t)
	if got := ip("map", mapGREIn); len(got) != 0 {
		t.Errorf("ip gre_in after DeleteInbound: %v", got)
	}
	if got := ip("set", setGREOut); len(got) != 0 {
		t.Errorf("ip gre_out after DeleteOutbound: %v", got)
	}
	l.checkFastPath(t, true)
	l.checkFastPath(t, false)
	l.addCall(t)
	if diff := cmp.Diff(callElements(true), l.elements(t)); diff != "" {
		t.Errorf("elements after the rebuild (-want +got):\n%s", diff)
	}
	l.sendIn(t, in)
	if c := l.counts(t); c.FastIn.Packets != 1 || c.IPIn.Packets != 0 {
		t.Errorf("counters after the rebuild: %+v; want the packet in FastIn", c)
	}
}

func TestFastPathDelete(t *testing.T) {
	l := newFastLab(t)
	l.addCall(t)
	in := greV1(fastNATID, 1, "before")
	out := greV1(fastServerID, 1, "before")
	l.sendIn(t, in)
	l.sendOut(t, out, wanAddr)
	if c := l.counts(t); c.FastIn.Packets != 1 || c.FastOut.Packets != 1 {
		t.Fatalf("counters before the delete: %+v; want a packet each way in the fast path", c)
	}

	l.deleteCall(t)
	want := map[string][]string{"netdev gre_in": {}, "netdev gre_out": {}, "ip gre_in": {}, "ip gre_out": {}}
	if diff := cmp.Diff(want, l.elements(t)); diff != "" {
		t.Errorf("elements after the delete (-want +got):\n%s", diff)
	}
	l.srvGRE.send(t, wanAddr.As4(), greV1(fastNATID, 2, "after"))
	noGRE(t, l.lanGRE, "LAN host, after the delete")
	// The LAN host's GRE is ordinary forwarded GRE now: it may reach the
	// server (this router has no NAT), but not translated, from the WAN
	// address.
	l.lanGRE.send(t, serverIP.As4(), greV1(fastServerID, 2, "after"))
	if b, err := l.srvGRE.recv(300 * time.Millisecond); err == nil {
		if p, perr := parseIP(b); perr != nil || p.src == wanAddr {
			t.Errorf("server, after the delete: got % x translated to the WAN address", b)
		}
	}
}

// TestFastPathElementsWithCall: a call's fast-path elements go in with its
// ip table elements, in the same batch, and a deletion takes them out.
func TestFastPathElementsWithCall(t *testing.T) {
	l := newFastLab(t)
	if err := l.p.AddInbound(serverIP, fastNATID, lanHostIP, fastClientID); err != nil {
		t.Fatal(err)
	}
	if err := l.p.AddOutbound(lanHostIP, serverIP, fastServerID); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(callElements(true), l.elements(t)); diff != "" {
		t.Fatalf("elements once the call's additions returned (-want +got):\n%s", diff)
	}
	l.sendIn(t, greV1(fastNATID, 1, "in"))
	if c := l.counts(t); c.FastIn.Packets != 1 {
		t.Fatalf("counters: %+v; want the inbound packet in the fast path", c)
	}
	l.deleteCall(t)

	// Calls added and deleted leave nothing behind in either table.
	for i := range 200 {
		if err := l.p.AddInbound(serverIP, uint16(100+i), lanHostIP, fastClientID); err != nil {
			t.Fatal(err)
		}
		if err := l.p.AddOutbound(lanHostIP, serverIP, uint16(100+i)); err != nil {
			t.Fatal(err)
		}
		if err := l.p.DeleteInbound(serverIP, uint16(100+i)); err != nil {
			t.Fatal(err)
		}
		if err := l.p.DeleteOutbound(lanHostIP, serverIP, uint16(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]string{"netdev gre_in": {}, "netdev gre_out": {}, "ip gre_in": {}, "ip gre_out": {}}
	if diff := cmp.Diff(want, l.elements(t)); diff != "" {
		t.Errorf("elements after 200 calls added and deleted (-want +got):\n%s", diff)
	}

	// A client the fast path cannot reach (no route) gets no fast path
	// element, and its deletion asks for none: a refused batch would mark
	// the fast path for rebuilding.
	far := netip.MustParseAddr("10.99.0.5")
	if err := l.p.AddInbound(serverIP, 900, far, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.p.AddOutbound(far, serverIP, 900); err != nil {
		t.Fatal(err)
	}
	if e := l.elements(t); len(e["netdev gre_in"]) != 0 || len(e["netdev gre_out"]) != 0 || len(e["ip gre_in"]) != 1 {
		t.Errorf("elements for a client off the LAN: %v; want it in the ip table only", e)
	}
	if err := l.p.DeleteInbound(serverIP, 900); err != nil {
		t.Fatal(err)
	}
	if err := l.p.DeleteOutbound(far, serverIP, 900); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, l.elements(t)); diff != "" {
		t.Errorf("elements after the call off the LAN (-want +got):\n%s", diff)
	}

	// The router's own call (client: its WAN address) stays off the fast
	// path both ways: its GRE is delivered locally, and a LAN host forging
	// the router's address would pass fwd unchecked.
	if err := l.p.AddInbound(serverIP, 901, wanAddr, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.p.AddOutbound(wanAddr, serverIP, 901); err != nil {
		t.Fatal(err)
	}
	if e := l.elements(t); len(e["netdev gre_in"]) != 0 || len(e["netdev gre_out"]) != 0 || len(e["ip gre_in"]) != 1 {
		t.Errorf("elements for the router's own call: %v; want it in the ip table only", e)
	}
	if err := l.p.DeleteInbound(serverIP, 901); err != nil {
		t.Fatal(err)
	}
	if err := l.p.DeleteOutbound(wanAddr, serverIP, 901); err != nil {
		t.Fatal(err)
	}
	l.p.mu.Lock()
	dirty := l.p.fast.dirty
	l.p.mu.Unlock()
	if dirty {
		t.Error("the fast path was marked for rebuilding: a batch was refused")
	}
}

// TestFastPathAbsentLAN: a LAN interface that does not exist (a bridge
// that is down) gets no ingress chain, the others keep the fast path, and
// it gets its chain when it appears and loses it when it goes.
func TestFastPathAbsentLAN(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	r := newRouter(t)
	p := openFastPlane(t, r, []string{"rlan0", "rguest0"}, true)
	chains := func() string {
		return nftStdout(t, r.rtr, "list", "table", "netdev", "pptp_alg")
	}
	check := func(want bool) {
		t.Helper()
		rebuilt, err := p.CheckFastPath()
		if err != nil || rebuilt != want {
			t.Fatalf("CheckFastPath() = %v, %v; want %v, nil", rebuilt, err, want)
		}
		if on, why := p.FastPath(); !on {
			t.Fatalf("FastPath() = off (%v)", why)
		}
	}
	if on, why := p.FastPath(); !on {
		t.Fatalf("FastPath() with rguest0 absent = off (%v), want on for rlan0", why)
	}
	if got := chains(); !strings.Contains(got, "chain lan_ingress_rlan0") || strings.Contains(got, "rguest0") {
		t.Fatalf("netdev table with rguest0 absent:\n%s", got)
	}
	check(false)

	r.rtr.ip(t, "link", "add", "rguest0", "type", "bridge")
	r.rtr.ip(t, "link", "set", "rguest0", "up")
	check(true)
	if got := chains(); !strings.Contains(got, "chain lan_ingress_rlan0") || !strings.Contains(got, "chain lan_ingress_rguest0") {
		t.Fatalf("netdev table once rguest0 exists:\n%s", got)
	}
	check(false)

	r.rtr.ip(t, "link", "del", "rguest0")
	check(true)
	if got := chains(); !strings.Contains(got, "chain lan_ingress_rlan0") || strings.Contains(got, "rguest0") {
		t.Fatalf("netdev table after rguest0 went:\n%s", got)
	}
}

// TestFastPathRefusedAddition: when the kernel refuses a batch because of
// the fast path (its table deleted behind the Plane's back), the call's ip
// table elements go in all the same, and the fast path is marked for
// rebuilding; once rebuilt, the call added again takes it.
func TestFastPathRefusedAddition(t *testing.T) {
	l := newFastLab(t)
	nftStdout(t, l.rtr, "delete", "table", "netdev", "pptp_alg")
	if err := l.p.AddInbound(serverIP, fastNATID, lanHostIP, fastClientID); err != nil {
		t.Fatalf("AddInbound with the netdev table gone: %v", err)
	}
	if err := l.p.AddOutbound(lanHostIP, serverIP, fastServerID); err != nil {
		t.Fatalf("AddOutbound with the netdev table gone: %v", err)
	}
	for _, set := range []string{"map ip pptp_alg gre_in", "set ip pptp_alg gre_out"} {
		if got := nftStdout(t, l.rtr, append([]string{"list"}, strings.Fields(set)...)...); !strings.Contains(got, "counter packets") {
			t.Fatalf("%s with the netdev table gone:\n%s\nwant the call's element", set, got)
		}
	}
	if !l.p.FastPathStale() {
		t.Fatal("the fast path not marked for rebuilding after a refused batch")
	}
	if rebuilt, err := l.p.CheckFastPath(); err != nil || !rebuilt {
		t.Fatalf("CheckFastPath() = %v, %v; want true, nil", rebuilt, err)
	}
	l.addCall(t)
	if diff := cmp.Diff(callElements(true), l.elements(t)); diff != "" {
		t.Errorf("elements after the rebuild and the call added again (-want +got):\n%s", diff)
	}
}

// TestFastPathRebuildWaitsForBatch: a rebuild waits for an element batch
// in flight, which holds the Plane's mutex while it goes to the kernel. Had
// it not, the batch, made for the old links, could land in the new table
// with nobody knowing, and no deletion would take it out: a later call
// given the same NAT call ID would have its GRE sent to the earlier call's
// client (seen in TestFaultWANChange, where the WAN address changed and
// rebuilt the fast path twice within 10 ms).
func TestFastPathRebuildWaitsForBatch(t *testing.T) {
	l := newFastLab(t)
	p := l.p
	p.mu.Lock()         // as sendAdditions does, with a batch on its way to the kernel
	p.fast.dirty = true // the next check rebuilds
	done := make(chan error, 1)
	go func() {
		_, err := p.CheckFastPath()
		done <- err
	}()
	select {
	case err := <-done:
		p.mu.Unlock()
		t.Fatalf("the rebuild went ahead with a batch in flight (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	p.mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("CheckFastPath: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the rebuild did not go ahead 5 s after the batch landed")
	}
	// The rebuilt fast path works: a call added now is carried by it.
	l.addCall(t)
	if diff := cmp.Diff(callElements(true), l.elements(t)); diff != "" {
		t.Errorf("elements after the rebuild (-want +got):\n%s", diff)
	}
}
