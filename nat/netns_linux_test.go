package nat

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireKernel skips tb unless it can build nftables tables in network
// namespaces of its own: root, NETLINK_NETFILTER sockets (qemu-user has
// none), and iproute2's ip.
func requireKernel(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and nftables tables")
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		tb.Skipf("no NETLINK_NETFILTER socket (%v): not a real kernel (qemu-user?)", err)
	}
	unix.Close(fd)
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs iproute2's ip to create network namespaces")
	}
}

// requireNft skips tb unless the nft tool is there.
func requireNft(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		tb.Skip("needs nft to read the table back")
	}
}

// netns is a named network namespace that a test created and removes.
type netns struct {
	name string
	fd   int // open on /run/netns/NAME, for nftables.WithNetNSFd
}

var netnsSeq atomic.Uint32

// newNetNS creates a namespace with lo up; t.Cleanup deletes it.
func newNetNS(tb testing.TB, role string) *netns {
	tb.Helper()
	name := fmt.Sprintf("pptpalg-%d-%d-%s", os.Getpid(), netnsSeq.Add(1), role)
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		tb.Fatalf("open netns %s: %v", name, err)
	}
	tb.Cleanup(func() { f.Close() })
	ns := &netns{name: name, fd: int(f.Fd())}
	ns.ip(tb, "link", "set", "lo", "up")
	return ns
}

// ip runs `ip -n NAME args...`.
func (ns *netns) ip(tb testing.TB, args ...string) {
	tb.Helper()
	run(tb, "ip", append([]string{"-n", ns.name}, args...)...)
}

// exec runs a command inside the namespace and returns its output.
func (ns *netns) exec(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	return run(tb, "ip", append([]string{"netns", "exec", ns.name, name}, args...)...)
}

// do runs f on an OS thread that has entered the namespace; sockets that f
// creates stay in it. The thread is never returned to the scheduler: the
// goroutine ends locked, so Go discards the thread.
func (ns *netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// rawSocket is an IPv4 raw socket for one protocol, bound to a namespace.
// Reads return whole IP packets, header included.
type rawSocket struct {
	fd int
}

func openRaw(tb testing.TB, ns *netns, proto int) *rawSocket {
	tb.Helper()
	var fd int
	err := ns.do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if err != nil {
		tb.Fatalf("raw socket for protocol %d in %s: %v", proto, ns.name, err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return &rawSocket{fd: fd}
}

// send sends payload (the IP header is the kernel's) to dst.
func (s *rawSocket) send(tb testing.TB, dst [4]byte, payload []byte) {
	tb.Helper()
	if err := unix.Sendto(s.fd, payload, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
		tb.Fatalf("sendto %v: %v", dst, err)
	}
}

var errTimeout = errors.New("nothing received")

// recv returns the next packet, or errTimeout after d.
func (s *rawSocket) recv(d time.Duration) ([]byte, error) {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errTimeout
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, errTimeout
		}
		buf := make([]byte, 65536)
		n, _, err = unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// drain discards whatever is queued.
func (s *rawSocket) drain() {
	for {
		if _, err := s.recv(time.Millisecond); err != nil {
			return
		}
	}
}
