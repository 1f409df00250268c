package conntrack

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a thread of its own in a fresh network namespace.
// The thread is never unlocked, so Go retires it when f returns.
func inNewNetns(t testing.TB, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables, ctnetlink)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft")
	}
	// qemu-user has no netfilter netlink sockets.
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Skipf("no netfilter netlink socket here: %v", err)
	}
	unix.Close(fd)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		f()
	}()
	<-done
}

func nft(t *testing.T, script string) {
	t.Helper()
	// The child inherits the locked thread's network namespace.
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

// TestRedirectedConnection checks both questions the relay asks of a
// connection it accepted through a redirect: where it was going, and
// whether the kernel's PPTP helper is on it.
func TestRedirectedConnection(t *testing.T) {
	inNewNetns(t, func() {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip: %v: %s", err, out)
		}
		ln, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		nft(t, `table ip t {
			ct helper pptp { type "pptp" protocol tcp; }
			# after conntrack (-200), before NAT rewrites the port (-100)
			chain out { type filter hook output priority -150; tcp dport 1723 ct helper set "pptp"; }
			chain outnat { type nat hook output priority -100; ip daddr 127.0.0.2 meta l4proto tcp redirect to :`+strconv.Itoa(port)+`; }
		}`)
		tr, err := Open()
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()

		for _, tc := range []struct {
			dst        string
			wantHelper string
		}{
			{"127.0.0.2:1723", "pptp"},
			{"127.0.0.2:1800", ""},
		} {
			c, err := net.Dial("tcp4", tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			got, err := OriginalDst(s)
			if err != nil || got != netip.MustParseAddrPort(tc.dst) {
				t.Errorf("OriginalDst = %v, %v; want %s", got, err, tc.dst)
			}
			client := c.LocalAddr().(*net.TCPAddr).AddrPort()
			// A reply left on the socket by an earlier request (one that
			// timed out) must not be taken for this one's: ask about a
			// missing entry without reading the answer.
			stale, err := getRequest(netip.MustParseAddrPort("127.0.0.9:1"), netip.MustParseAddrPort("127.0.0.9:2"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tr.c.Send(stale); err != nil {
				t.Fatal(err)
			}
			helper, err := tr.Helper(client, got)
			if err != nil || helper != tc.wantHelper {
				t.Errorf("Helper(%v -> %v) = %q, %v; want %q", client, got, helper, err, tc.wantHelper)
			}
			c.Close()
			s.Close()
		}

		// A connection conntrack has no entry for has no helper.
		for _, tc := range []struct{ src, dst string }{
			{"127.0.0.9:4000", "127.0.0.2:1723"},
			{"0.0.0.0:0", "0.0.0.0:0"}, // the daemon's start-up probe
		} {
			helper, err := tr.Helper(netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst))
			if err != nil || helper != "" {
				t.Errorf("Helper(%s -> %s) with no entry = %q, %v; want \"\", nil", tc.src, tc.dst, helper, err)
			}
		}
		if _, err := tr.Helper(netip.MustParseAddrPort("[::1]:4000"), netip.MustParseAddrPort("[::1]:1723")); err == nil {
			t.Error("Helper of an IPv6 connection: no error")
		}
	})
}
