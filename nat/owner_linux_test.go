package nat

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// openOwnedPlane opens the fast lab's Plane with owned tables and the NAT
// redirect, closed when the test ends.
func openOwnedPlane(t *testing.T, r router) *Plane {
	t.Helper()
	p, err := Open(Config{LAN: []string{"rlan0"}, WAN: "rwan0", WANAddr: wanAddr, RelayPort: relayPort,
		FastPath: true, Redirect: true, Owner: true}, nftables.WithNetNSFd(r.rtr.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// ownedTables lists the tables in ns whose flags include owner, as
// "FAMILY NAME". By nft's text: nft 1.0.6's JSON prints the owner flag
// from beyond its table of flag names, garbage or nothing.
func ownedTables(t *testing.T, ns *netns) []string {
	t.Helper()
	var owned []string
	for _, line := range strings.Split(strings.TrimSpace(nftStdout(t, ns, "list", "tables")), "\n") {
		if line == "" {
			continue
		}
		name := strings.TrimPrefix(line, "table ")
		out := nftStdout(t, ns, append([]string{"list", "table"}, strings.Fields(name)...)...)
		if strings.Contains(out, "\n\tflags owner\n") {
			owned = append(owned, name)
		}
	}
	slices.Sort(owned)
	return owned
}

// TestOwnedTables: with Config.Owner both tables are owned by the Plane's
// socket. `nft flush ruleset` leaves them whole, elements, the redirect's
// nat chain and all; nobody else can delete them; they go with the socket,
// at Close or when it is lost, and Lost says so.
func TestOwnedTables(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	r := newRouter(t)
	if fs := Probe(r.rtr.fd); fs[len(fs)-1].Name != "table owner" || fs[len(fs)-1].Err != nil {
		t.Fatalf("probe of the owner flag: %+v", fs[len(fs)-1])
	}
	p := openOwnedPlane(t, r)
	l := &fastLab{router: r, p: p}
	l.addCall(t)
	want := []string{"ip pptp_alg", "netdev pptp_alg"}
	if got := ownedTables(t, r.rtr); !slices.Equal(got, want) {
		t.Fatalf("owned tables %q, want %q", got, want)
	}
	before := nftStdout(t, r.rtr, "list", "ruleset")
	if !strings.Contains(before, "chain relay_redirect") || !strings.Contains(before, "redirect to :") {
		t.Fatalf("no redirect in the ruleset:\n%s", before)
	}

	r.rtr.exec(t, "nft", "flush", "ruleset")
	if after := nftStdout(t, r.rtr, "list", "ruleset"); after != before {
		t.Errorf("nft flush ruleset changed the ruleset:\n%s\nwas:\n%s", after, before)
	}
	if ok, err := p.Intact(); !ok || err != nil {
		t.Errorf("Intact() after the flush = %v, %v; want true, nil", ok, err)
	}
	if got := l.elements(t); !equalElements(got, callElements(true)) {
		t.Errorf("elements after the flush %v, want %v", got, callElements(true))
	}

	// Nobody else may delete or change them, root or not.
	for _, cmd := range [][]string{
		{"delete", "table", "ip", "pptp_alg"},
		{"delete", "table", "netdev", "pptp_alg"},
		{"flush", "chain", "ip", "pptp_alg", "relay_redirect"},
		{"add", "element", "ip", "pptp_alg", "gre_calls", "{ 203.0.113.9 . 7 }"},
	} {
		out, err := exec.Command("ip", append([]string{"netns", "exec", r.rtr.name, "nft"}, cmd...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Operation not permitted") {
			t.Errorf("nft %s by another socket: %v: %s; want Operation not permitted", strings.Join(cmd, " "), err, out)
		}
	}
	// Nor may a second Plane replace them.
	if _, err := Open(Config{LAN: []string{"rlan0"}, WAN: "rwan0", WANAddr: wanAddr, RelayPort: relayPort,
		Owner: true}, nftables.WithNetNSFd(r.rtr.fd)); !errors.Is(err, unix.EPERM) {
		t.Errorf("second Open over owned tables: %v, want EPERM", err)
	}
	if got := ownedTables(t, r.rtr); !slices.Equal(got, want) {
		t.Fatalf("owned tables after the attempts %q, want %q", got, want)
	}

	// A fault that replaces the socket takes the tables with it, and
	// Lost says so; Reinstall puts them back, owned by the new socket.
	p.mu.Lock()
	_ = p.settle(os.NewSyscallError("recvmsg", unix.ENOBUFS))
	p.mu.Unlock()
	select {
	case <-p.Lost():
	default:
		t.Fatal("Lost() has nothing after the socket was replaced")
	}
	if got := ownedTables(t, r.rtr); len(got) != 0 {
		t.Errorf("tables %q left after their socket closed", got)
	}
	if ok, err := p.Intact(); ok || err != nil {
		t.Errorf("Intact() after the socket was replaced = %v, %v; want false, nil", ok, err)
	}
	if err := p.Reinstall(); err != nil {
		t.Fatalf("Reinstall: %v", err)
	}
	l.addCall(t)
	r.rtr.exec(t, "nft", "flush", "ruleset")
	if got := ownedTables(t, r.rtr); !slices.Equal(got, want) {
		t.Errorf("owned tables after Reinstall and a flush %q, want %q", got, want)
	}
	if got := l.elements(t); !equalElements(got, callElements(true)) {
		t.Errorf("elements after Reinstall and a flush %v, want %v", got, callElements(true))
	}

	// Replaced by its own socket, changed by it: as before.
	if err := p.Reinstall(); err != nil {
		t.Fatalf("Reinstall over the owned tables: %v", err)
	}
	if err := p.SetWANAddr(wanAddr); err != nil {
		t.Fatalf("SetWANAddr: %v", err)
	}
	l.addCall(t)
	if got := ownedTables(t, r.rtr); !slices.Equal(got, want) {
		t.Errorf("owned tables after a second Reinstall %q, want %q", got, want)
	}
	if got := l.elements(t); !equalElements(got, callElements(true)) {
		t.Errorf("elements after a second Reinstall %v, want %v", got, callElements(true))
	}

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if out := strings.TrimSpace(nftStdout(t, r.rtr, "list", "tables")); out != "" {
		t.Errorf("tables left after Close:\n%s", out)
	}
}

// TestOwnedReplacesUnowned: an unowned table of the name, as a crashed
// run on a kernel without the owner flag leaves it, is replaced by an
// owned one.
func TestOwnedReplacesUnowned(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	r := newRouter(t)
	r.rtr.exec(t, "nft", "add table ip pptp_alg; add chain ip pptp_alg stale; add table netdev pptp_alg")
	p := openOwnedPlane(t, r)
	if got, want := ownedTables(t, r.rtr), []string{"ip pptp_alg", "netdev pptp_alg"}; !slices.Equal(got, want) {
		t.Errorf("owned tables %q, want %q", got, want)
	}
	if ok, err := p.Intact(); !ok || err != nil {
		t.Errorf("Intact() = %v, %v; want true, nil", ok, err)
	}
	if out := nftStdout(t, r.rtr, "list", "table", "ip", "pptp_alg"); strings.Contains(out, "stale") {
		t.Errorf("the old table's chain is left:\n%s", out)
	}
}

func equalElements(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
