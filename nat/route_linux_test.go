package nat

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// routeLab is a namespace with veth rt0 (10.9.0.1/24, MTU 1400) and its
// peer rt1, both up, and a default route via 10.9.0.254.
func routeLab(t *testing.T) (ns *netns, rt0 int) {
	t.Helper()
	requireKernel(t)
	ns = newNetNS(t, "route")
	ns.ip(t, "link", "add", "rt0", "mtu", "1400", "type", "veth", "peer", "name", "rt1")
	ns.ip(t, "addr", "add", "10.9.0.1/24", "dev", "rt0")
	ns.ip(t, "link", "set", "rt0", "up")
	ns.ip(t, "link", "set", "rt1", "up")
	ns.ip(t, "route", "add", "default", "via", "10.9.0.254")
	ns.ip(t, "route", "add", "unreachable", "203.0.113.0/24")

	var links []struct{ Ifindex int }
	out := run(t, "ip", "-n", ns.name, "-j", "link", "show", "rt0")
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show rt0: %v: %s", err, out)
	}
	return ns, links[0].Ifindex
}

func TestLookupRoute(t *testing.T) {
	ns, rt0 := routeLab(t)
	tests := []struct {
		name    string
		dst     string
		want    route
		wantErr error // nil: want no error; errAny: any error
	}{
		{name: "on-link", dst: "10.9.0.7", want: route{OIF: rt0, Via: netip.MustParseAddr("10.9.0.7")}},
		{name: "gateway", dst: "198.51.100.9", want: route{OIF: rt0, Via: netip.MustParseAddr("10.9.0.254")}},
		{name: "unreachable route", dst: "203.0.113.1", wantErr: unix.EHOSTUNREACH},
		{name: "local", dst: "10.9.0.1", wantErr: errAny},
		{name: "loopback", dst: "127.0.0.1", wantErr: errAny},
		{name: "broadcast", dst: "10.9.0.255", wantErr: errAny},
		{name: "IPv6", dst: "2001:db8::1", wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookupRoute(ns.fd, netip.MustParseAddr(tt.dst))
			checkErr(t, err, tt.wantErr)
			if err == nil && got != tt.want {
				t.Errorf("lookupRoute(%s) = %+v, want %+v", tt.dst, got, tt.want)
			}
		})
	}

	t.Run("no default route", func(t *testing.T) {
		ns.ip(t, "route", "del", "default")
		_, err := lookupRoute(ns.fd, netip.MustParseAddr("198.51.100.9"))
		checkErr(t, err, unix.ENETUNREACH)
	})
}

func TestLookupLink(t *testing.T) {
	ns, rt0 := routeLab(t)
	tests := []struct {
		name    string
		link    string
		want    link
		wantErr error
	}{
		{name: "veth", link: "rt0", want: link{Index: rt0, MTU: 1400}},
		{name: "loopback", link: "lo", want: link{Index: 1, MTU: 65536}},
		{name: "missing", link: "nosuch0", wantErr: unix.ENODEV},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookupLink(ns.fd, tt.link)
			checkErr(t, err, tt.wantErr)
			if err == nil && got != tt.want {
				t.Errorf("lookupLink(%s) = %+v, want %+v", tt.link, got, tt.want)
			}
		})
	}
}

// TestRoutesDigest changes the routes step by step; each step must change
// the digest, and reading it again without a change must not.
func TestRoutesDigest(t *testing.T) {
	ns, _ := routeLab(t)
	digest := func() uint64 {
		t.Helper()
		d, err := routesDigest(ns.fd)
		if err != nil {
			t.Fatalf("routesDigest: %v", err)
		}
		return d
	}
	prev := digest()
	if d := digest(); d != prev {
		t.Fatalf("digest changed with no change: %#x, then %#x", prev, d)
	}
	steps := []struct {
		name string
		ip   []string
	}{
		{"add a route", []string{"route", "add", "192.0.2.0/24", "via", "10.9.0.254"}},
		{"replace the gateway", []string{"route", "replace", "default", "via", "10.9.0.253"}},
		{"set a metric", []string{"route", "replace", "192.0.2.0/24", "via", "10.9.0.254", "metric", "5"}},
		{"delete a route", []string{"route", "del", "192.0.2.0/24"}},
		{"add a route to another table", []string{"route", "add", "192.0.2.0/24", "via", "10.9.0.254", "table", "100"}},
		{"take the link down", []string{"link", "set", "rt0", "down"}},
	}
	for _, s := range steps {
		ns.ip(t, s.ip...)
		d := digest()
		if d == prev {
			t.Errorf("%s (ip %v): digest stayed %#x", s.name, s.ip, d)
		}
		if again := digest(); again != d {
			t.Errorf("%s: digest changed with no change: %#x, then %#x", s.name, d, again)
		}
		prev = d
	}
}

var errAny = errors.New("any error")

func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want == errAny && err == nil, want != nil && want != errAny && !errors.Is(err, want):
		t.Fatalf("error %v, want %v", err, want)
	}
}
