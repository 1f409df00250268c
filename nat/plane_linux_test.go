package nat

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/conntrack"
)

// These tests need root and a real kernel. Each works in network namespaces
// that it creates and deletes, so the host's ruleset is never touched.

var (
	wanAddr   = netip.MustParseAddr("203.0.113.1")
	serverIP  = netip.MustParseAddr("203.0.113.2")
	lanHostIP = netip.MustParseAddr("10.200.1.2")
	routerLAN = netip.MustParseAddr("10.200.1.1")
)

const relayPort = 11723

// tableView is what nft -j says is in the table.
type tableView struct {
	Sets   map[string][]string // set or map name -> elements as "a . b : c . d", sorted
	Chains map[string]string   // chain name -> "type hook prio policy", or "regular"
}

// viewTable reads the table back with nft -j.
func viewTable(tb testing.TB, ns *netns, table string) tableView {
	tb.Helper()
	out := ns.exec(tb, "nft", "-j", "list", "table", "ip", table)
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		tb.Fatalf("nft -j: %v\n%s", err, out)
	}
	v := tableView{Sets: map[string][]string{}, Chains: map[string]string{}}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["chain"]; ok {
			var c struct {
				Name, Type, Hook, Policy string
				Prio                     int
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				tb.Fatal(err)
			}
			v.Chains[c.Name] = fmt.Sprintf("%s %s %d %s", c.Type, c.Hook, c.Prio, c.Policy)
			if c.Hook == "" {
				v.Chains[c.Name] = "regular"
			}
		}
		raw, ok := obj["set"]
		if !ok {
			raw, ok = obj["map"]
		}
		if !ok {
			continue
		}
		var s struct {
			Name string
			Elem []any
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			tb.Fatal(err)
		}
		els := []string{}
		for _, e := range s.Elem {
			if kv, ok := e.([]any); ok && len(kv) == 2 { // map element: [key, value]
				els = append(els, jsonElem(kv[0])+" : "+jsonElem(kv[1]))
			} else {
				els = append(els, jsonElem(e))
			}
		}
		slices.Sort(els)
		v.Sets[s.Name] = els
	}
	return v
}

// jsonElem renders one element of nft's JSON: a value, a concatenation, or
// an element with a counter.
func jsonElem(e any) string {
	switch e := e.(type) {
	case map[string]any:
		if c, ok := e["concat"].([]any); ok {
			parts := make([]string, len(c))
			for i, p := range c {
				parts[i] = jsonElem(p)
			}
			return strings.Join(parts, " . ")
		}
		if el, ok := e["elem"].(map[string]any); ok {
			return jsonElem(el["val"])
		}
		if g, ok := e["goto"].(map[string]any); ok {
			return fmt.Sprintf("goto %v", g["target"])
		}
	case float64:
		return fmt.Sprint(e)
	case string:
		return e
	}
	return fmt.Sprintf("%v", e)
}

func TestPlaneKernel(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "api")
	cfg := Config{LAN: []string{"lan0", "lan1"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort,
		RouterCalls: true, RelayMark: 0x20000000}
	nsOpt := nftables.WithNetNSFd(ns.fd)

	// Someone else's table, which must survive everything below.
	ns.exec(t, "nft", "add table ip other; add chain ip other c { type filter hook input priority 0; }")

	// A table left by an earlier run, with an element in it, is replaced.
	old, err := Open(cfg, nsOpt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := old.AddInbound(serverIP, 1, lanHostIP, 1); err != nil {
		t.Fatalf("AddInbound: %v", err)
	}
	p, err := Open(cfg, nsOpt)
	if err != nil {
		t.Fatalf("Open over an earlier table: %v", err)
	}
	want := tableView{
		Sets: map[string][]string{
			"lan_ifaces": {"lan0", "lan1"},
			"gre_iifs":   {"lan0 : goto gre_from_lan", "lan1 : goto gre_from_lan", "wan0 : goto gre_from_wan"},
			"gre_in":     {},
			"gre_out":    {},
			"gre_calls":  {},
		},
		Chains: map[string]string{
			"gre_prerouting":   "filter prerouting -300 accept",
			"gre_from_wan":     "regular",
			"gre_from_lan":     "regular",
			"gre_postrouting":  "filter postrouting 100 accept",
			"relay_prerouting": "regular",
			"relay_redirect":   "nat prerouting -105 accept",
			"relay_to_lan":     "filter output -300 accept",
			"relay_input":      "filter input -5 accept",
			"relay_output":     "nat output -105 accept",
		},
	}
	if diff := cmp.Diff(want, viewTable(t, ns, "pptp_alg")); diff != "" {
		t.Fatalf("table after Open (-want +got):\n%s", diff)
	}
	// The key and data types print readably.
	list := ns.exec(t, "nft", "list", "table", "ip", "pptp_alg")
	for _, s := range []string{
		"type ipv4_addr . inet_service : ipv4_addr . inet_service",
		"type ipv4_addr . ipv4_addr . inet_service",
		"ip saddr . ip daddr . @th,48,16 @gre_out notrack accept",
		"ip protocol gre @th,0,32 & 0x2007ffff == 0x2001880b iifname vmap @gre_iifs",
		"ip protocol gre oifname \"wan0\" ct state untracked ip saddr != 203.0.113.1 ip saddr set 203.0.113.1",
		"iifname @lan_ifaces tcp dport 1723 fib daddr type != local tproxy to :1723 notrack meta mark set meta mark | 0x10000000 accept",
		"iifname @lan_ifaces tcp dport 1723 fib daddr type != local tcp flags syn / fin,syn,rst,ack tproxy to :11723 notrack meta mark set meta mark | 0x10000000",
		"tcp sport 1723 oifname @lan_ifaces fib saddr type != local notrack",
		"tcp dport 1723 goto relay_prerouting",
		"ip daddr . @th,48,16 @gre_calls drop",
		`oifname "wan0" tcp dport 1723 meta mark & 0x20000000 == 0x00000000 redirect to :11723`,
		"tcp dport 11723 ct status ! dnat drop",
	} {
		if !strings.Contains(list, s) {
			t.Errorf("nft list table lacks %q:\n%s", s, list)
		}
	}

	client2 := netip.MustParseAddr("10.200.1.3")
	steps := []struct {
		name string
		err  error
	}{
		{"AddInbound", p.AddInbound(serverIP, 5, lanHostIP, 7)},
		{"AddInbound again", p.AddInbound(serverIP, 5, lanHostIP, 7)},
		{"AddInbound second call", p.AddInbound(serverIP, 6, client2, 7)},
		{"AddOutbound", p.AddOutbound(lanHostIP, serverIP, 9)},
		{"AddOutbound again", p.AddOutbound(lanHostIP, serverIP, 9)},
		{"AddOutbound second call", p.AddOutbound(client2, serverIP, 10)},
	}
	for _, s := range steps {
		if s.err != nil {
			t.Fatalf("%s: %v", s.name, s.err)
		}
	}
	if err := p.AddInbound(serverIP, 5, lanHostIP, 8); !errors.Is(err, unix.EEXIST) {
		t.Errorf("AddInbound over another value: %v, want EEXIST", err)
	}
	want.Sets["gre_in"] = []string{"203.0.113.2 . 5 : 10.200.1.2 . 7", "203.0.113.2 . 6 : 10.200.1.3 . 7"}
	want.Sets["gre_out"] = []string{"10.200.1.2 . 203.0.113.2 . 9", "10.200.1.3 . 203.0.113.2 . 10"}
	want.Sets["gre_calls"] = []string{"203.0.113.2 . 10", "203.0.113.2 . 9"}
	if diff := cmp.Diff(want, viewTable(t, ns, "pptp_alg")); diff != "" {
		t.Errorf("table after adds (-want +got):\n%s", diff)
	}
	in, out := map[InKey]Counter{}, map[OutKey]Counter{}
	if err := p.Counters(in, out); err != nil {
		t.Fatalf("Counters: %v", err)
	}
	wantIn := map[InKey]Counter{{serverIP, 5}: {}, {serverIP, 6}: {}}
	wantOut := map[OutKey]Counter{{lanHostIP, serverIP, 9}: {}, {client2, serverIP, 10}: {}}
	if diff := cmp.Diff(wantIn, in); diff != "" {
		t.Errorf("Counters in (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantOut, out); diff != "" {
		t.Errorf("Counters out (-want +got):\n%s", diff)
	}

	for _, s := range []struct {
		name string
		err  error
	}{
		{"DeleteInbound", p.DeleteInbound(serverIP, 5)},
		{"DeleteInbound missing", p.DeleteInbound(serverIP, 5)},
		{"DeleteOutbound", p.DeleteOutbound(lanHostIP, serverIP, 9)},
		{"DeleteOutbound missing", p.DeleteOutbound(lanHostIP, serverIP, 9)},
	} {
		if s.err != nil {
			t.Errorf("%s: %v", s.name, s.err)
		}
	}
	want.Sets["gre_in"] = []string{"203.0.113.2 . 6 : 10.200.1.3 . 7"}
	want.Sets["gre_out"] = []string{"10.200.1.3 . 203.0.113.2 . 10"}
	want.Sets["gre_calls"] = []string{"203.0.113.2 . 10"}
	if diff := cmp.Diff(want, viewTable(t, ns, "pptp_alg")); diff != "" {
		t.Errorf("table after deletes (-want +got):\n%s", diff)
	}

	// SetWANAddr replaces the one rule of gre_postrouting.
	if err := p.SetWANAddr(netip.MustParseAddr("198.51.100.7")); err != nil {
		t.Fatalf("SetWANAddr: %v", err)
	}
	post := ns.exec(t, "nft", "list", "chain", "ip", "pptp_alg", "gre_postrouting")
	if !strings.Contains(post, "ip saddr != 198.51.100.7 ip saddr set 198.51.100.7") || strings.Contains(post, "203.0.113.1") {
		t.Errorf("gre_postrouting after SetWANAddr:\n%s", post)
	}
	if err := p.SetWANAddr(netip.Addr{}); err != nil {
		t.Fatalf("SetWANAddr(none): %v", err)
	}
	post = ns.exec(t, "nft", "list", "chain", "ip", "pptp_alg", "gre_postrouting")
	if !strings.Contains(post, `ip protocol gre oifname "wan0" ct state untracked drop`) || strings.Contains(post, "saddr") {
		t.Errorf("gre_postrouting after SetWANAddr(none):\n%s", post)
	}
	if err := p.SetWANAddr(netip.MustParseAddr("198.51.100.7")); err != nil {
		t.Fatalf("SetWANAddr: %v", err)
	}

	// Someone deletes the table, then someone flushes the ruleset.
	for _, cmd := range []string{"delete table ip pptp_alg", "flush ruleset"} {
		if ok, err := p.Installed(); !ok || err != nil {
			t.Fatalf("Installed before %q: %v, %v", cmd, ok, err)
		}
		ns.exec(t, "nft", cmd)
		if ok, err := p.Installed(); ok || err != nil {
			t.Fatalf("Installed after %q: %v, %v; want false, nil", cmd, ok, err)
		}
		if err := p.AddInbound(serverIP, 5, lanHostIP, 7); !errors.Is(err, unix.ENOENT) {
			t.Errorf("AddInbound without a table: %v, want ENOENT", err)
		}
		if err := p.DeleteInbound(serverIP, 6); err != nil {
			t.Errorf("DeleteInbound without a table: %v, want nil", err)
		}
		if err := p.Reinstall(); err != nil {
			t.Fatalf("Reinstall after %q: %v", cmd, err)
		}
		if ok, err := p.Installed(); !ok || err != nil {
			t.Fatalf("Installed after Reinstall: %v, %v", ok, err)
		}
		want.Sets["gre_in"], want.Sets["gre_out"], want.Sets["gre_calls"] = []string{}, []string{}, []string{}
		if diff := cmp.Diff(want, viewTable(t, ns, "pptp_alg")); diff != "" {
			t.Errorf("table after Reinstall (-want +got):\n%s", diff)
		}
		// Reinstall keeps the WAN address that SetWANAddr set.
		post := ns.exec(t, "nft", "list", "chain", "ip", "pptp_alg", "gre_postrouting")
		if !strings.Contains(post, "ip saddr set 198.51.100.7") {
			t.Errorf("gre_postrouting after Reinstall:\n%s", post)
		}
	}
	// The flush took the other table with it; make it again.
	ns.exec(t, "nft", "add table ip other")

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	tables := ns.exec(t, "nft", "list", "tables")
	if strings.Contains(tables, "pptp_alg") || !strings.Contains(tables, "table ip other") {
		t.Errorf("tables after Close:\n%s", tables)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Errorf("Close of the replaced Plane: %v", err)
	}
}

// TestPlaneConcurrent adds and deletes calls from several goroutines at once
// (run it with -race).
func TestPlaneConcurrent(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t, "conc")
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort},
		nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	const workers, calls = 8, 24
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range calls {
				id := uint16(w*calls + i)
				client := netip.AddrFrom4([4]byte{10, 200, 1, byte(2 + w)})
				if err := p.AddInbound(serverIP, id, client, id); err != nil {
					errc <- err
					return
				}
				if err := p.AddOutbound(client, serverIP, id); err != nil {
					errc <- err
					return
				}
				if i%2 == 0 { // keep the odd ones
					if err := p.DeleteInbound(serverIP, id); err != nil {
						errc <- err
						return
					}
					if err := p.DeleteOutbound(client, serverIP, id); err != nil {
						errc <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	in, out := map[InKey]Counter{}, map[OutKey]Counter{}
	if err := p.Counters(in, out); err != nil {
		t.Fatalf("Counters: %v", err)
	}
	if want := workers * calls / 2; len(in) != want || len(out) != want {
		t.Errorf("%d inbound and %d outbound elements, want %d each", len(in), len(out), want)
	}
}

// router is the data-plane test network: a LAN host, a NAT router and a
// server, each in its own namespace.
//
//	lan eth0 10.200.1.2 -- rlan0 10.200.1.1 [router] rwan0 203.0.113.1 -- eth0 203.0.113.2 server
//
// The server has no route to the LAN: it can only answer the WAN address.
type router struct {
	lan, rtr, server *netns
}

// relayMark marks the relay's own connections in these tests.
const relayMark = 0x20000000

// openPlane opens a Plane in the router, closed when the test ends.
func (r router) openPlane(t *testing.T) *Plane {
	t.Helper()
	p, err := Open(Config{LAN: []string{"rlan0"}, WAN: "rwan0", WANAddr: wanAddr, RelayPort: relayPort,
		RouterCalls: true, RelayMark: relayMark}, nftables.WithNetNSFd(r.rtr.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newRouter(t *testing.T) router {
	r := router{lan: newNetNS(t, "lan"), rtr: newNetNS(t, "rtr"), server: newNetNS(t, "srv")}
	r.rtr.ip(t, "link", "add", "rlan0", "type", "veth", "peer", "name", "eth0", "netns", r.lan.name)
	r.rtr.ip(t, "link", "add", "rwan0", "type", "veth", "peer", "name", "eth0", "netns", r.server.name)
	r.rtr.ip(t, "addr", "add", "10.200.1.1/24", "dev", "rlan0")
	r.rtr.ip(t, "addr", "add", "203.0.113.1/24", "dev", "rwan0")
	r.rtr.ip(t, "link", "set", "rlan0", "up")
	r.rtr.ip(t, "link", "set", "rwan0", "up")
	r.rtr.exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	r.lan.ip(t, "addr", "add", "10.200.1.2/24", "dev", "eth0")
	r.lan.ip(t, "link", "set", "eth0", "up")
	r.lan.ip(t, "route", "add", "default", "via", "10.200.1.1")
	r.server.ip(t, "addr", "add", "203.0.113.2/24", "dev", "eth0")
	r.server.ip(t, "link", "set", "eth0", "up")
	return r
}

// greV1 builds an enhanced GRE packet (RFC 2637 section 4.1) with the
// sequence number present.
func greV1(callID uint16, seq uint32, payload string) []byte {
	b := []byte{0x30, 0x01, 0x88, 0x0b} // K and S bits, version 1, protocol PPP
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	b = binary.BigEndian.AppendUint16(b, callID)
	b = binary.BigEndian.AppendUint32(b, seq)
	return append(b, payload...)
}

// ipPacket is what a raw socket read returns, taken apart.
type ipPacket struct {
	src, dst netip.Addr
	ttl      uint8
	proto    uint8
	total    int
	payload  []byte
	csumOK   bool
}

func parseIP(b []byte) (ipPacket, error) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return ipPacket{}, fmt.Errorf("not IPv4: % x", b)
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return ipPacket{}, fmt.Errorf("bad IHL: % x", b)
	}
	var sum uint32
	for i := 0; i < ihl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ipPacket{
		src:     netip.AddrFrom4([4]byte(b[12:16])),
		dst:     netip.AddrFrom4([4]byte(b[16:20])),
		ttl:     b[8],
		proto:   b[9],
		total:   int(binary.BigEndian.Uint16(b[2:])),
		payload: b[ihl:],
		csumOK:  sum == 0xffff,
	}, nil
}

// greKey is the call ID of a received enhanced GRE packet.
func greKey(p ipPacket) (uint16, error) {
	if p.proto != unix.IPPROTO_GRE || len(p.payload) < 8 {
		return 0, fmt.Errorf("not GRE: proto %d, % x", p.proto, p.payload)
	}
	return binary.BigEndian.Uint16(p.payload[6:]), nil
}

func TestDataPlane(t *testing.T) {
	requireKernel(t)
	r := newRouter(t)
	const (
		natID    = 0x4001 // what the server was told
		clientID = 0x0101 // the LAN host's own call ID
		serverID = 0x7777 // the server's call ID
	)
	lanGRE := openRaw(t, r.lan, unix.IPPROTO_GRE)
	lanICMP := openRaw(t, r.lan, unix.IPPROTO_ICMP)
	srvGRE := openRaw(t, r.server, unix.IPPROTO_GRE)
	srvICMP := openRaw(t, r.server, unix.IPPROTO_ICMP)
	const wait = 300 * time.Millisecond

	// Control: without the table the router has nothing for PPTP GRE. This
	// kernel then answers with ICMP protocol unreachable (NOTES.md); only
	// logged, since it depends on which GRE modules the kernel has.
	srvGRE.send(t, wanAddr.As4(), greV1(natID, 0, "control"))
	if b, err := srvICMP.recv(time.Second); err == nil {
		t.Logf("control, no table: the server got ICMP type %d code %d from the router", b[20], b[21])
	} else {
		t.Logf("control, no table: no ICMP (%v)", err)
	}
	srvICMP.drain()

	p := r.openPlane(t)
	if err := p.AddInbound(serverIP, natID, lanHostIP, clientID); err != nil {
		t.Fatal(err)
	}
	if err := p.AddOutbound(lanHostIP, serverIP, serverID); err != nil {
		t.Fatal(err)
	}

	// Server to LAN: the destination becomes the LAN host, the key its call ID.
	in := greV1(natID, 1, "lcp-conf-req")
	srvGRE.send(t, wanAddr.As4(), in)
	receive(t, lanGRE, "LAN host, inbound GRE", expect(serverIP, lanHostIP, 63, clientID, in))
	inBytes := 20 + len(in)

	// LAN to server: the source becomes the WAN address, the key stays.
	out := greV1(serverID, 1, "lcp-conf-ack")
	lanGRE.send(t, serverIP.As4(), out)
	receive(t, srvGRE, "server, outbound GRE", expect(wanAddr, serverIP, 63, serverID, out))
	outBytes := 20 + len(out)

	// The server's unknown key is not pptp-alg's: it goes on untouched to
	// the router's own stack, as it would without the table (here it draws
	// the control's ICMP, which a firewall would turn into its own
	// verdict), and nothing reaches the LAN.
	srvGRE.send(t, wanAddr.As4(), greV1(natID+1, 2, "unknown"))
	if b, err := lanGRE.recv(wait); err == nil {
		t.Errorf("LAN host got GRE for an unknown key: % x", b)
	}
	srvICMP.drain()
	// GRE from a LAN host for a call it does not have is ordinary
	// forwarded GRE (this router has no NAT): it reaches the server
	// untranslated, from the host's own address.
	lanGRE.send(t, serverIP.As4(), greV1(serverID+1, 2, "not mine"))
	receive(t, srvGRE, "server, GRE of no relayed call", expect(lanHostIP, serverIP, 63, serverID+1, greV1(serverID+1, 2, "not mine")))
	// But it may not carry another host's relayed call: that is dropped,
	// silently.
	const otherID = 0x7788
	if err := p.AddOutbound(netip.MustParseAddr("10.200.1.9"), serverIP, otherID); err != nil {
		t.Fatal(err)
	}
	lanGRE.send(t, serverIP.As4(), greV1(otherID, 2, "another's call"))
	if b, err := srvGRE.recv(wait); err == nil {
		t.Errorf("server got GRE from a LAN host for another host's call: % x", b)
	}
	if b, err := lanICMP.recv(wait); err == nil {
		t.Errorf("LAN host got ICMP for GRE it may not send: % x", b)
	}
	if err := p.DeleteOutbound(netip.MustParseAddr("10.200.1.9"), serverIP, otherID); err != nil {
		t.Fatal(err)
	}

	// Each accepted packet moved its element's counter, and only that one.
	ins, outs := map[InKey]Counter{}, map[OutKey]Counter{}
	if err := p.Counters(ins, outs); err != nil {
		t.Fatalf("Counters: %v", err)
	}
	wantIn := map[InKey]Counter{{serverIP, natID}: {1, uint64(inBytes)}}
	wantOut := map[OutKey]Counter{{lanHostIP, serverIP, serverID}: {1, uint64(outBytes)}}
	if diff := cmp.Diff(wantIn, ins); diff != "" {
		t.Errorf("inbound counters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantOut, outs); diff != "" {
		t.Errorf("outbound counters (-want +got):\n%s", diff)
	}

	// Untracked: the router's conntrack has no entry for the call's GRE
	// (the unknown key and the stray GRE above are tracked, as without
	// pptp-alg).
	if _, err := exec.LookPath("conntrack"); err == nil {
		ct, _ := exec.Command("ip", "netns", "exec", r.rtr.name, "conntrack", "-L", "-p", "gre").CombinedOutput()
		for _, key := range []string{fmt.Sprintf("dstkey=0x%x ", natID), fmt.Sprintf("dstkey=0x%x ", serverID)} {
			if strings.Contains(string(ct), key) {
				t.Errorf("conntrack tracks the call's GRE (%s):\n%s", key, ct)
			}
		}
	}

	// After DeleteInbound the call's GRE is no longer pptp-alg's: it
	// reaches no LAN host.
	if err := p.DeleteInbound(serverIP, natID); err != nil {
		t.Fatal(err)
	}
	srvGRE.send(t, wanAddr.As4(), greV1(natID, 3, "after delete"))
	if b, err := lanGRE.recv(wait); err == nil {
		t.Errorf("LAN host got GRE after DeleteInbound: % x", b)
	}
}

// relayListener listens as the daemon's relay does (transparent, every
// address, relayPort) in the router's namespace and hands out what it accepts.
func (r router) relayListener(t *testing.T) <-chan net.Conn {
	t.Helper()
	var ln net.Listener
	if err := r.rtr.do(func() (err error) {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		ln, err = lc.Listen(context.Background(), "tcp4", fmt.Sprintf(":%d", relayPort))
		return err
	}); err != nil {
		t.Fatalf("relay listener: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	return accepted
}

// TestRelayTProxy: the LAN's control connections reach the relay's
// transparent listener with their own addresses; the router's own reach it
// by the redirect.
func TestRelayTProxy(t *testing.T) {
	requireKernel(t)
	r := newRouter(t)
	r.openPlane(t)
	accepted := r.relayListener(t)

	dial := func(ns *netns, addr string, timeout time.Duration) error {
		return ns.do(func() error {
			c, err := net.DialTimeout("tcp4", addr, timeout)
			if err == nil {
				c.Close()
			}
			return err
		})
	}

	// A LAN host's control connection to the server lands on the relay,
	// whose socket has the server's address.
	if err := dial(r.lan, "203.0.113.2:1723", 2*time.Second); err != nil {
		t.Fatalf("LAN host to server:1723: %v", err)
	}
	select {
	case c := <-accepted:
		if got := c.RemoteAddr().(*net.TCPAddr).IP.String(); got != lanHostIP.String() {
			t.Errorf("relay accepted from %s, want %v", got, lanHostIP)
		}
		if got := c.LocalAddr().String(); got != "203.0.113.2:1723" {
			t.Errorf("relay's socket is %s, want the server's 203.0.113.2:1723", got)
		}
		c.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("relay accepted nothing")
	}

	// A LAN host's connection to the router's own PPTP server is not the
	// relay's: it reaches that server.
	listen := func(ns *netns, addr string) net.Listener {
		var l net.Listener
		if err := ns.do(func() (err error) { l, err = net.Listen("tcp4", addr); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return l
	}
	listen(r.rtr, "10.200.1.1:1723")
	if err := dial(r.lan, "10.200.1.1:1723", 2*time.Second); err != nil {
		t.Errorf("LAN host to the router's own tcp/1723: %v", err)
	}
	select {
	case c := <-accepted:
		t.Errorf("relay accepted the LAN host's connection to the router itself, from %v", c.RemoteAddr())
		c.Close()
	case <-time.After(200 * time.Millisecond):
	}

	// The router's own connection out of the WAN lands on the relay, from
	// the router's own address; one carrying the relay's mark goes out.
	if err := dial(r.rtr, "203.0.113.2:1723", 2*time.Second); err != nil {
		t.Fatalf("router to server:1723: %v", err)
	}
	select {
	case c := <-accepted:
		if got := c.RemoteAddr().(*net.TCPAddr).IP.String(); got != wanAddr.String() {
			t.Errorf("relay accepted the router's own connection from %s, want %v", got, wanAddr)
		}
		c.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("relay accepted nothing from the router itself")
	}
	listen(r.server, "203.0.113.2:1723")
	if err := r.rtr.do(func() error {
		d := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, relayMark|1)
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err := d.Dial("tcp4", "203.0.113.2:1723")
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Errorf("router to server:1723 with the relay's mark: %v", err)
	}
	select {
	case c := <-accepted:
		t.Errorf("relay accepted a connection that carried its mark, from %v", c.RemoteAddr())
		c.Close()
	case <-time.After(200 * time.Millisecond):
	}

	// The relay port itself answers nobody, from either side.
	for _, tc := range []struct {
		name string
		ns   *netns
		addr string
	}{
		{"server to the WAN address", r.server, fmt.Sprintf("203.0.113.1:%d", relayPort)},
		{"LAN host to the router", r.lan, fmt.Sprintf("10.200.1.1:%d", relayPort)},
	} {
		err := dial(tc.ns, tc.addr, 500*time.Millisecond)
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s:%d: %v, want a timeout (dropped)", tc.name, relayPort, err)
		}
	}
	select {
	case c, ok := <-accepted:
		if ok {
			t.Errorf("relay accepted a direct connection from %v", c.RemoteAddr())
			c.Close()
		}
	default:
	}
}

// BenchmarkAddDeleteCall measures setting up and tearing down one call:
// AddInbound, AddOutbound, DeleteInbound, DeleteOutbound, four batches on
// the Plane's one socket. WithNetNSFd only decides where that socket is
// made, so the loop runs as it would in the daemon. (Entering the namespace
// with a locked thread instead would time Go's hand-off of a locked thread
// at every netlink reply, several times slower.)
func BenchmarkAddDeleteCall(b *testing.B) {
	p := openBenchPlane(b, 0)
	var i uint16
	for b.Loop() {
		i++
		addCall(b, p, lanHostIP, i, i)
		deleteCall(b, p, lanHostIP, i)
	}
}

// TestRelayRedirect: with Config.Redirect (set at run time), a LAN host's
// control connection reaches the relay by the NAT redirect, at the router's
// LAN address, and conntrack knows the server it was going to; switched
// back, tproxy takes the next one with the server's address.
func TestRelayRedirect(t *testing.T) {
	requireKernel(t)
	r := newRouter(t)
	p := r.openPlane(t)
	accepted := r.relayListener(t)
	dialServer := func(want string, original bool) {
		t.Helper()
		if err := r.lan.do(func() error {
			c, err := net.DialTimeout("tcp4", "203.0.113.2:1723", 2*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			t.Fatalf("LAN host to server:1723: %v", err)
		}
		select {
		case c := <-accepted:
			defer c.Close()
			if got := c.LocalAddr().String(); got != want {
				t.Errorf("relay's socket is %s, want %s", got, want)
			}
			dst, err := conntrack.OriginalDst(c)
			switch {
			case original && (err != nil || dst.String() != "203.0.113.2:1723"):
				t.Errorf("original destination: %v, %v; want 203.0.113.2:1723", dst, err)
			case !original && err == nil:
				t.Errorf("a tproxied connection has an original destination in conntrack: %v", dst)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("relay accepted nothing")
		}
	}
	intact := func(when string) {
		t.Helper()
		if ok, err := p.Intact(); !ok || err != nil {
			t.Errorf("Intact %s: %v, %v", when, ok, err)
		}
	}

	if err := p.SetRedirect(true); err != nil {
		t.Fatalf("SetRedirect(true): %v", err)
	}
	intact("in redirect mode")
	dialServer(fmt.Sprintf("10.200.1.1:%d", relayPort), true)
	if err := p.SetRedirect(false); err != nil {
		t.Fatalf("SetRedirect(false): %v", err)
	}
	intact("back in tproxy mode")
	dialServer("203.0.113.2:1723", false)
}
