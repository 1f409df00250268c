package conntrack

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkHelper times the question asked of every relayed control
// connection, on an idle conntrack table and on one holding 30,000 other
// flows (real UDP flows on the loopback). It must not grow with the table.
func BenchmarkHelper(b *testing.B) {
	for _, flows := range []int{0, 30000} {
		b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
			inNewNetns(b, func() { benchHelper(b, flows) })
		})
	}
}

func benchHelper(b *testing.B, flows int) {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		b.Fatalf("ip: %v: %s", err, out)
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`table ip t { chain out { type filter hook output priority 0; ct state new accept; }; }`)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("nft: %v: %s", err, out)
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer udp.Close()
	for i := range flows { // one conntrack entry per destination
		udp.WriteToUDPAddrPort([]byte{0}, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}), 9))
	}
	if out, err := exec.Command("conntrack", "-C").Output(); err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); n < flows {
			b.Fatalf("conntrack holds %d entries, want at least %d", n, flows)
		}
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tr, err := Open()
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	src, dst := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	b.ResetTimer()
	for range b.N {
		if _, err := tr.Helper(src, dst); err != nil {
			b.Fatal(err)
		}
	}
}
