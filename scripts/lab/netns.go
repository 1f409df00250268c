package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Do runs f on a thread that is in network namespace ns for the duration of
// the call. Sockets and netlink connections f opens stay in ns after Do
// returns; goroutines f starts do not run in ns.
func (l *Lab) Do(ns string, f func() error) error {
	return inNetns(ns, f)
}

func inNetns(ns string, f func() error) (err error) {
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	defer func() {
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Leave the thread locked: Go then retires it with this
			// goroutine rather than reuse it in the wrong namespace.
			err = errors.Join(err, fmt.Errorf("setns back from %s: %w", ns, rerr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return f()
}

// Ping sends one ICMP echo request from namespace ns to dst and waits for the
// reply until ctx ends or a second has passed.
func (l *Lab) Ping(ctx context.Context, ns string, dst netip.Addr) error {
	var c net.PacketConn
	if err := l.Do(ns, func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return fmt.Errorf("ping from %s: %w", ns, err)
	}
	defer c.Close()
	deadline := time.Now().Add(time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)

	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	req := []byte{8, 0, 0, 0, idb[0], idb[1], 0, 1, 'p', 'a', 'l'} // echo request, seq 1
	binary.BigEndian.PutUint16(req[2:], inetChecksum(req))
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("ping %s from %s: %w", dst, ns, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping %s from %s: %w", dst, ns, err)
		}
		ip, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		// A raw ICMP socket sees all ICMP; ours is the echo reply
		// (type 0) from dst carrying our identifier.
		if n >= 8 && buf[0] == 0 && ip.Unmap() == dst && binary.BigEndian.Uint16(buf[4:]) == id {
			return nil
		}
	}
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// processAlive reports whether pid runs. A zombie does not: where pid 1
// does not reap (some containers), a killed test binary stays one.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// killNamespace kills, by PID, every process in namespace ns. Only lab
// namespaces are passed here, so these are processes a lab started.
func killNamespace(ctx context.Context, ns string) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}
