package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// tools are built once for all tests in TestMain.
var tools *Tools

func TestMain(m *testing.M) {
	if Supported() == nil {
		// Named like a lab's dir, so a later lab removes it if this
		// test binary is killed.
		dir, err := os.MkdirTemp("", fmt.Sprintf("pal%d-tools-", os.Getpid()))
		if err != nil {
			panic(err)
		}
		tools, err = BuildTools(context.Background(), dir)
		if err != nil {
			os.RemoveAll(dir)
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// newLab builds a lab for t, or skips t where labs cannot run.
func newLab(t *testing.T, opt Options) *Lab {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	opt.Tools = tools
	opt.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	l, err := New(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab %s (%v, %d hosts) built in %v", l.Name, opt.Firewall, len(l.Hosts), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		start := time.Now()
		if err := l.Close(); err != nil {
			t.Error(err)
		}
		t.Logf("lab closed in %v", time.Since(start).Round(time.Millisecond))
		for _, ns := range l.Namespaces() {
			if nsExists(ns) {
				t.Errorf("namespace %s left behind", ns)
			}
		}
	})
	return l
}

// TestKernelHelperTunnels is the anchor: with the kernel PPTP helper under a
// stock fw4 ruleset, real pptp-linux clients in three hosts hold tunnels to
// one pptpd at once and PPP frames come back through each.
func TestKernelHelperTunnels(t *testing.T) {
	l := newLab(t, Options{Firewall: FirewallFW4Helper, Hosts: 3})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := l.StartPPTPD(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("pptpd listening after %v", time.Since(start).Round(time.Millisecond))

	var clients []*Client
	for _, h := range l.Hosts {
		c, err := l.StartPPTPClient(h)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	// All three tunnels up at the same time.
	for _, c := range clients {
		d, err := c.WaitUp(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: tunnel up after %v", c.Host.Name, d.Round(time.Millisecond))
	}
	const frames = 50
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			start := time.Now()
			n, err := c.Echo(ctx, frames)
			if err != nil {
				t.Error(err)
				return
			}
			t.Logf("%s: %d/%d frames echoed in %v", c.Host.Name, n, frames, time.Since(start).Round(time.Millisecond))
		})
	}
	wg.Wait()

	// While the tunnels are up, the router's conntrack table holds the
	// helper's GRE entries.
	if out, err := l.Run(ctx, l.Router, "conntrack", "-L", "-p", "gre"); err != nil {
		t.Log(err)
	} else {
		t.Logf("router conntrack (GRE):\n%s", out)
	}

	start = time.Now()
	var closers sync.WaitGroup
	for _, c := range clients {
		closers.Go(func() { c.Close() })
	}
	closers.Wait()
	t.Logf("clients closed in %v", time.Since(start).Round(time.Millisecond))
}

// TestRunPPTPClient runs one tunnel with the one-call helper.
func TestRunPPTPClient(t *testing.T) {
	l := newLab(t, Options{Firewall: FirewallFW4Helper, Hosts: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := l.StartPPTPD(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := l.RunPPTPClient(ctx, l.Hosts[0], 10)
	if err != nil || n != 10 {
		t.Fatalf("RunPPTPClient = %d, %v; want 10, nil", n, err)
	}
}

// TestPlainRouting checks the wiring without NAT: hosts reach the router,
// the router reaches the server, and the server cannot answer a LAN address
// because it has no route back.
func TestPlainRouting(t *testing.T) {
	l := newLab(t, Options{Firewall: FirewallNone, Hosts: 2})
	ctx := t.Context()
	for _, h := range l.Hosts {
		if err := l.Ping(ctx, h.NS, l.LANAddr); err != nil {
			t.Error(err)
		}
		if err := l.Ping(ctx, h.NS, l.WANAddr); err != nil {
			t.Error(err)
		}
	}
	if err := l.Ping(ctx, l.Router, l.ServerAddr); err != nil {
		t.Error(err)
	}
	if err := l.Ping(ctx, l.Hosts[0].NS, l.ServerAddr); err == nil {
		t.Error("host reached the server without NAT; the server must not route to the LAN")
	}
}

// TestMasquerade checks that behind the fw4 ruleset hosts reach the server
// and the server sees only the WAN address, and that the server cannot open
// anything towards the LAN.
func TestMasquerade(t *testing.T) {
	for _, fw := range []Firewall{FirewallFW4Helper, FirewallFW4, FirewallFW4AndHelper} {
		t.Run(fw.String(), func(t *testing.T) {
			l := newLab(t, Options{Firewall: fw, Hosts: 1})
			ctx := t.Context()
			if err := l.Ping(ctx, l.Hosts[0].NS, l.ServerAddr); err != nil {
				t.Error(err)
			}
			if err := l.Ping(ctx, l.Server, l.WANAddr); err != nil {
				t.Errorf("fw4 allows ping to the router from wan: %v", err)
			}
			if err := l.Ping(ctx, l.Server, l.Hosts[0].Addr); err == nil {
				t.Error("server reached a LAN host")
			}
		})
	}
}

// TestStaleLabRemoved checks that New removes namespaces a dead process left.
func TestStaleLabRemoved(t *testing.T) {
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	// No process has PID 1<<30 (pid_max is at most 1<<22); the tag keeps
	// test runs in parallel apart.
	stale := fmt.Sprintf("paltest1073741824-%d-router", os.Getpid())
	if err := Run(t.Context(), "ip", "netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if nsExists(stale) {
			Run(context.Background(), "ip", "netns", "delete", stale)
		}
	})
	newLab(t, Options{Prefix: "paltest", Hosts: 1})
	if nsExists(stale) {
		t.Fatalf("stale namespace %s not removed", stale)
	}
}

func TestSyslogText(t *testing.T) {
	for in, want := range map[string]string{
		"<30>Nov 21 23:58:01 pptp[1]: anon log[main]: hello\n": "pptp[1]: anon log[main]: hello",
		"<29>pptpd[7]: MGR: started":                           "pptpd[7]: MGR: started",
		"plain":                                                "plain",
	} {
		if got := syslogText([]byte(in)); got != want {
			t.Errorf("syslogText(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFW4IncludeCarriesUntrackedGRE checks the project's fw4 include on its
// own, with a stand-in for pptp-alg's data plane: a stateless table for one
// host and no call-ID translation, which takes GRE out of conntrack
// (notrack) and rewrites addresses. Under fw4 with the include, a tunnel
// comes up and carries frames; with no includes, fw4 rejects the untracked
// GRE and the tunnel never comes up.
func TestFW4IncludeCarriesUntrackedGRE(t *testing.T) {
	for _, tc := range []struct {
		name     string
		includes string // "" is the project's tree
		works    bool
	}{
		{name: "with include", works: true},
		{name: "without include", includes: t.TempDir()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, Options{Firewall: FirewallFW4, Hosts: 1, Includes: tc.includes})
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			h := l.Hosts[0]
			standIn := fmt.Sprintf(`table ip lab_gre_stand_in {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		iifname %[1]q ip protocol gre ip daddr %[3]s ip daddr set %[4]s notrack
		iifname %[2]q ip protocol gre notrack
	}
	chain postrouting {
		type filter hook postrouting priority srcnat; policy accept;
		oifname %[1]q ip protocol gre ct state untracked ip saddr set %[3]s
	}
}
`, RouterWAN, RouterLAN, l.WANAddr, h.Addr)
			f := filepath.Join(l.Dir, "stand-in.nft")
			if err := os.WriteFile(f, []byte(standIn), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Run(ctx, l.Router, "nft", "-f", f); err != nil {
				t.Fatal(err)
			}
			if err := l.StartPPTPD(ctx); err != nil {
				t.Fatal(err)
			}
			n, err := l.RunPPTPClient(ctx, h, 20)
			if tc.works && (err != nil || n != 20) {
				t.Fatalf("RunPPTPClient = %d, %v; want 20 frames back", n, err)
			}
			if !tc.works && err == nil {
				t.Fatalf("tunnel worked without the include (%d frames back)", n)
			}
		})
	}
}
