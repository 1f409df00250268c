package nat

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// TestProbe: this kernel has every feature, and probing leaves nothing.
func TestProbe(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "probe")
	start := time.Now()
	fs := Probe(ns.fd)
	took := time.Since(start)
	if len(fs) != len(Features) {
		t.Fatalf("%d findings for %d features", len(fs), len(Features))
	}
	for _, f := range fs {
		if f.Err != nil {
			t.Errorf("%s (%s): %v", f.Name, f.Kernel, f.Err)
		}
	}
	if _, ok := Missing(fs, false); ok {
		t.Error("Missing reports a feature missing")
	}
	if took > time.Second {
		t.Errorf("probing took %v, want under a second", took)
	}
	if out := strings.TrimSpace(ns.exec(t, "nft", "list", "ruleset")); out != "" {
		t.Errorf("probing left a ruleset:\n%s", out)
	}
}

// TestProbeMissing: a feature the kernel refuses is reported with the
// kernel's errno, at once, and those built on it are not tried.
func TestProbeMissing(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t, "probemiss")
	bogus := Feature{Name: "bogus chain type", queue: func(c *nftables.Conn, tb *nftables.Table) error {
		c.AddChain(&nftables.Chain{Table: tb, Name: "c", Type: "nosuchtype",
			Hooknum: nftables.ChainHookPrerouting, Priority: prioRaw})
		return nil
	}}
	start := time.Now()
	err := probeFeature(ns.fd, bogus)
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("probe of a chain type the kernel lacks: %v, want ENOENT", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("took %v", took)
	}
	fs := []Finding{{Feature: Features[0], Err: unix.EOPNOTSUPP}}
	if f, ok := Missing(fs, false); !ok || f.Name != "nftables" {
		t.Errorf("Missing(%v) = %v, %v", fs, f, ok)
	}
	fs = []Finding{{Feature: Features[0]}, {Feature: Features[len(Features)-1], Err: unix.ENOENT}}
	if f, ok := Missing(fs, false); ok {
		t.Errorf("a fast path feature counts as missing: %v", f)
	}
}

// withoutNetAdmin runs f on an OS thread, in ns, whose effective
// capabilities lack CAP_NET_ADMIN: the kernel then refuses every batch sent
// on a socket it opens with a single error, as a kernel without nf_tables
// does (nfnetlink acknowledges the batch's begin message alone). The
// thread is discarded after.
func withoutNetAdmin(t *testing.T, ns *netns, f func()) {
	t.Helper()
	err := ns.do(func() error {
		runtime.LockOSThread() // ends locked: Go discards the thread
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return err
		}
		f()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestProbeNotPermitted: where the kernel refuses a whole batch with one
// error, Probe says so at once and tries nothing more.
func TestProbeNotPermitted(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t, "refused")
	withoutNetAdmin(t, ns, func() {
		start := time.Now()
		fs := Probe(0)
		if took := time.Since(start); took > time.Second {
			t.Errorf("Probe took %v, want under a second", took)
		}
		if !errors.Is(fs[0].Err, unix.EPERM) {
			t.Errorf("nftables: %v, want EPERM", fs[0].Err)
		}
		for _, f := range fs[1:] {
			if !errors.Is(f.Err, ErrNotTried) {
				t.Errorf("%s: %v, want not tried", f.Name, f.Err)
			}
		}
	})
}

// dropReplies is a socket option whose filter drops every message the
// kernel sends: a kernel that never answers.
func dropReplies(c *netlink.Conn) error {
	return c.SetBPF([]bpf.RawInstruction{{Op: unix.BPF_RET | unix.BPF_K, K: 0}})
}

// TestOpenNoReply: a batch whose acknowledgements never come (a kernel
// without nf_tables answers one error for the whole batch, and
// google/nftables waits for one per message) ends at the deadline.
func TestOpenNoReply(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t, "noreply")
	ns.ip(t, "link", "add", "wan0", "type", "veth", "peer", "name", "wan1")
	defer func(d time.Duration) { replyTimeout = d }(replyTimeout)
	replyTimeout = 300 * time.Millisecond
	start := time.Now()
	p, err := Open(Config{LAN: []string{"lo"}, WAN: "wan0", RelayPort: 1724},
		nftables.WithNetNSFd(ns.fd), nftables.WithSockOptions(dropReplies))
	took := time.Since(start)
	if err == nil {
		p.Close()
		t.Fatal("Open succeeded with no reply from the kernel")
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Open: %v, want a deadline exceeded", err)
	}
	if took > 2*replyTimeout {
		t.Errorf("Open took %v, want about %v", took, replyTimeout)
	}
}

// TestOpenEnds: Open and Close end within their deadlines on any kernel,
// whether it has nf_tables or not (the ARM VM runs this without it).
func TestOpenEnds(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t, "ends")
	ns.ip(t, "link", "add", "wan0", "type", "veth", "peer", "name", "wan1")
	start := time.Now()
	p, err := Open(Config{LAN: []string{"lo"}, WAN: "wan0", RelayPort: 1724, FastPath: true}, nftables.WithNetNSFd(ns.fd))
	if err == nil {
		err = p.Close()
	}
	took := time.Since(start)
	t.Logf("Open and Close: %v after %v", err, took.Round(time.Millisecond))
	if took > 2*replyTimeout {
		t.Errorf("took %v", took)
	}
	if _, missing := Missing(Probe(ns.fd), false); !missing && err != nil {
		t.Errorf("the kernel has every feature, yet: %v", err)
	}
}
