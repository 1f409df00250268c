package nat

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
)

// quiet is how long a test waits to be sure no notification comes.
const quiet = 300 * time.Millisecond

func expectSignal(t *testing.T, w *Watch, after string) {
	t.Helper()
	select {
	case _, ok := <-w.C:
		if !ok {
			t.Fatalf("watch ended after %s: %v", after, w.Err())
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("no notification after %s", after)
	}
	// Let the rest of the same change arrive, then take it.
	time.Sleep(50 * time.Millisecond)
	select {
	case <-w.C:
	default:
	}
}

func expectQuiet(t *testing.T, w *Watch, after string) {
	t.Helper()
	select {
	case <-w.C:
		t.Errorf("a notification after %s; want none", after)
	case <-time.After(quiet):
	}
}

// TestWatchRuleset checks what wakes a ruleset watch: deletions from the
// Plane's tables do, calls coming and going and other tables do not; and
// that Intact tells a whole table from one that lost a chain's rules or
// everything.
func TestWatchRuleset(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "watchrs")
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort},
		nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	w, err := WatchRuleset(ns.fd, DefaultTable)
	if err != nil {
		t.Fatalf("WatchRuleset: %v", err)
	}
	defer w.Close()
	intact := func(want bool, when string) {
		t.Helper()
		if ok, err := p.Intact(); ok != want || err != nil {
			t.Fatalf("Intact %s = %v, %v; want %v", when, ok, err, want)
		}
	}
	intact(true, "after Open")
	// The kernel's socket filter alone, without deletesFrom after it.
	all, err := watchRuleset(ns.fd, func(netlink.Message) bool { return true })
	if err != nil {
		t.Fatalf("watchRuleset: %v", err)
	}
	defer all.Close()

	for i := range uint16(20) {
		if err := p.AddInbound(serverIP, i, lanHostIP, i); err != nil {
			t.Fatal(err)
		}
		if err := p.AddOutbound(lanHostIP, serverIP, i); err != nil {
			t.Fatal(err)
		}
		if err := p.DeleteInbound(serverIP, i); err != nil {
			t.Fatal(err)
		}
	}
	expectQuiet(t, w, "calls set up and released")
	expectQuiet(t, all, "calls set up and released (socket filter)")
	ns.exec(t, "nft", "add table ip other; add chain ip other c; delete table ip other")
	expectQuiet(t, w, "another table added and deleted")
	expectSignal(t, all, "another table added and deleted (socket filter)")
	if err := p.SetWANAddr(netip.MustParseAddr("198.51.100.7")); err != nil {
		t.Fatal(err)
	}
	expectSignal(t, w, "SetWANAddr flushed gre_postrouting") // the Plane's own
	intact(true, "after SetWANAddr")

	for _, cmd := range []string{
		"flush chain ip pptp_alg gre_postrouting",
		"delete table ip pptp_alg",
		"flush ruleset",
	} {
		ns.exec(t, "nft", cmd)
		expectSignal(t, w, cmd)
		intact(false, "after "+cmd)
		if err := p.Reinstall(); err != nil {
			t.Fatalf("Reinstall: %v", err)
		}
		expectSignal(t, w, "Reinstall") // it deletes the table it replaces
		intact(true, "after Reinstall")
	}

	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, ok := <-w.C; ok {
		t.Error("C still open after Close")
	}
	if err := w.Err(); err != nil {
		t.Errorf("Err after Close = %v, want nil", err)
	}
}

// TestWatchLinks checks that a watched link's state and MTU, an IPv4
// address on it and any route each wake a links watch, and that nothing
// does while nothing changes, or when only another link changes.
func TestWatchLinks(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t, "watchln")
	ns.ip(t, "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p")
	ns.ip(t, "link", "add", "other0", "type", "veth", "peer", "name", "other0p")
	w, err := WatchLinks(ns.fd, []string{"lan0", "wan0"})
	if err != nil {
		t.Fatalf("WatchLinks: %v", err)
	}
	defer w.Close()
	expectQuiet(t, w, "nothing")
	ns.ip(t, "link", "set", "other0", "mtu", "1400")
	ns.ip(t, "link", "set", "other0", "up")
	expectQuiet(t, w, "another link's MTU and state")
	for _, change := range [][]string{
		{"link", "set", "wan0", "up"},
		{"link", "set", "wan0", "mtu", "1400"},
		{"addr", "add", "198.51.100.2/24", "dev", "wan0"},
		{"route", "add", "203.0.113.0/24", "via", "198.51.100.1"},
		{"addr", "add", "198.51.100.3/24", "dev", "wan0", "label", "wan0:1"},
		{"addr", "del", "198.51.100.2/24", "dev", "wan0"},
	} {
		ns.ip(t, change...)
		expectSignal(t, w, "ip "+strings.Join(change, " "))
	}
}
