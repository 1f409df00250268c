package nat

import (
	"strings"
	"testing"

	"github.com/google/nftables"
)

// TestTProxyRoute: Open installs the policy rule and route that deliver
// tproxied connections locally, once even over an earlier run's; a flush
// of the ruleset leaves them; CheckRoute restores what `ip rule del`
// removed; Close removes both.
func TestTProxyRoute(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "troute")
	cfg := Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort}
	rules := func() int {
		return strings.Count(ns.exec(t, "ip", "rule", "show"), "fwmark 0x10000000/0x10000000 lookup 1723")
	}
	route := func() bool {
		return strings.Contains(ns.exec(t, "ip", "route", "show", "table", "1723"), "local default dev lo")
	}
	old, err := Open(cfg, nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	_ = old // an earlier run that never closed
	p, err := Open(cfg, nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	if n := rules(); n != 1 || !route() {
		t.Fatalf("after Open: %d rules, route %v; want 1 and true:\n%s", n, route(), ns.exec(t, "ip", "rule", "show"))
	}
	if !strings.Contains(ns.exec(t, "ip", "rule", "show"), "1723:\tfrom all fwmark 0x10000000/0x10000000 lookup 1723") {
		t.Errorf("rule not at priority 1723:\n%s", ns.exec(t, "ip", "rule", "show"))
	}
	ns.exec(t, "nft", "flush", "ruleset")
	if n := rules(); n != 1 || !route() {
		t.Errorf("after nft flush ruleset: %d rules, route %v", n, route())
	}
	if restored, err := p.CheckRoute(); err != nil || restored {
		t.Errorf("CheckRoute with both there: %v, %v; want false, nil", restored, err)
	}
	ns.exec(t, "ip", "rule", "del", "pref", "1723")
	ns.exec(t, "ip", "route", "flush", "table", "1723")
	if restored, err := p.CheckRoute(); err != nil || !restored {
		t.Errorf("CheckRoute after both were deleted: %v, %v; want true, nil", restored, err)
	}
	if n := rules(); n != 1 || !route() {
		t.Errorf("after CheckRoute: %d rules, route %v", n, route())
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := rules(); n != 0 || route() {
		t.Errorf("after Close: %d rules, route %v; want none", n, route())
	}
}

// TestTProxyRouteOnlyForTProxy: in redirect mode there is no policy rule
// (one would slow every forwarded packet's route lookup): Open adds none
// and removes one an earlier tproxy run left, CheckRoute adds none,
// SetRedirect(false) adds the rule and route and SetRedirect(true) removes
// them again.
func TestTProxyRouteOnlyForTProxy(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "troute")
	cfg := Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort, Redirect: true}
	state := func() (int, bool) {
		return strings.Count(ns.exec(t, "ip", "rule", "show"), "lookup 1723"),
			strings.Contains(ns.exec(t, "ip", "route", "show", "table", "all"), "local default dev lo table 1723")
	}
	p, err := Open(cfg, nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	if n, r := state(); n != 0 || r {
		t.Fatalf("after Open in redirect mode: %d rules, route %v; want none", n, r)
	}
	if restored, err := p.CheckRoute(); err != nil || restored {
		t.Errorf("CheckRoute in redirect mode: %v, %v; want false, nil", restored, err)
	}
	if n, r := state(); n != 0 || r {
		t.Errorf("after CheckRoute in redirect mode: %d rules, route %v; want none", n, r)
	}
	if err := p.SetRedirect(false); err != nil {
		t.Fatal(err)
	}
	if n, r := state(); n != 1 || !r {
		t.Errorf("after SetRedirect(false): %d rules, route %v; want 1 and true", n, r)
	}
	if err := p.SetRedirect(true); err != nil {
		t.Fatal(err)
	}
	if n, r := state(); n != 0 || r {
		t.Errorf("after SetRedirect(true): %d rules, route %v; want none", n, r)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// A tproxy run that never closed leaves its rule; a redirect run's
	// Open and Close remove it.
	cfg.Redirect = false
	if _, err := Open(cfg, nftables.WithNetNSFd(ns.fd)); err != nil {
		t.Fatal(err)
	}
	cfg.Redirect = true
	p, err = Open(cfg, nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	if n, r := state(); n != 0 || r {
		t.Errorf("after a redirect run's Open over a tproxy run's leftovers: %d rules, route %v; want none", n, r)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
