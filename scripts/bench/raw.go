package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// proto is what a raw socket carries: how its packets are built, and the
// 16-bit field its receiver sorts them by.
type proto struct {
	name  string // for net.ListenPacket("ip4:" + name)
	hdr   int    // header bytes before the payload
	build func(b []byte, key uint16, payload int)
	key   func(l4 []byte) (uint16, bool)
}

// GRE is enhanced GRE (RFC 2637 section 4.1) with the K and S bits, as
// pppd's peers send it, keyed by the call ID. UDP, keyed by destination port,
// stands for all other traffic through the router.
var (
	protoGRE = proto{
		name: "gre",
		hdr:  12,
		build: func(b []byte, key uint16, n int) {
			binary.BigEndian.PutUint16(b[0:], 0x3001) // K, S, version 1
			binary.BigEndian.PutUint16(b[2:], greProtoPPP)
			binary.BigEndian.PutUint16(b[4:], uint16(n))
			binary.BigEndian.PutUint16(b[6:], key)
			binary.BigEndian.PutUint32(b[8:], 1)
		},
		key: func(l4 []byte) (uint16, bool) {
			if len(l4) < 8 || binary.BigEndian.Uint16(l4[2:]) != greProtoPPP {
				return 0, false
			}
			return binary.BigEndian.Uint16(l4[6:]), true
		},
	}
	protoUDP = proto{
		name: "udp",
		hdr:  8,
		build: func(b []byte, port uint16, n int) {
			binary.BigEndian.PutUint16(b[0:], udpSourcePort)
			binary.BigEndian.PutUint16(b[2:], port)
			binary.BigEndian.PutUint16(b[4:], uint16(8+n))
			binary.BigEndian.PutUint16(b[6:], 0) // no checksum (RFC 768)
		},
		key: func(l4 []byte) (uint16, bool) {
			if len(l4) < 8 {
				return 0, false
			}
			return binary.BigEndian.Uint16(l4[2:]), true
		},
	}
)

const (
	greProtoPPP   = 0x880b
	udpSourcePort = 40000
	udpPort       = 9  // discard
	batch         = 64 // messages per sendmmsg/recvmmsg
)

// keySet is a set of 16-bit keys: call IDs or ports.
type keySet [1 << 16 / 64]uint64

func (k *keySet) add(id uint16)      { k[id/64] |= 1 << (id % 64) }
func (k *keySet) has(id uint16) bool { return k[id/64]&(1<<(id%64)) != 0 }

func keysOf(ids []uint16) *keySet {
	k := new(keySet)
	for _, id := range ids {
		k.add(id)
	}
	return k
}

// rawSocket is a raw IPv4 socket in one namespace. Its receiver counts the
// packets whose key is in the wanted set.
type rawSocket struct {
	p    proto
	c    *net.IPConn
	rc   syscall.RawConn
	pc   *ipv4.PacketConn
	want atomic.Pointer[keySet]
	good atomic.Uint64 // packets with a wanted key
	bad  atomic.Uint64 // others of the protocol
	done chan struct{}
}

// openRaw opens the socket, bound to addr, in the calling thread's
// namespace (call it inside lab.Do).
func openRaw(p proto, addr netip.Addr) (*rawSocket, error) {
	c, err := net.ListenPacket("ip4:"+p.name, addr.String())
	if err != nil {
		return nil, fmt.Errorf("%s socket on %v: %w", p.name, addr, err)
	}
	ic := c.(*net.IPConn)
	rc, err := ic.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	// A deep queue, so the reader's scheduling never drops what the router
	// forwarded.
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	})
	g := &rawSocket{p: p, c: ic, rc: rc, pc: ipv4.NewPacketConn(ic), done: make(chan struct{})}
	g.want.Store(new(keySet))
	return g, nil
}

// receive counts packets on cpu until the socket is closed.
func (g *rawSocket) receive(cpu int) {
	defer close(g.done)
	defer pin(cpu)()
	ms := make([]ipv4.Message, batch)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for {
		n, err := g.pc.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		want := g.want.Load()
		var good, bad uint64
		for _, m := range ms[:n] {
			b := m.Buffers[0][:m.N]
			if len(b) < 20 {
				continue
			}
			// A raw IPv4 socket reads the IP header too.
			k, ok := g.p.key(b[int(b[0]&0x0f)*4:])
			switch {
			case !ok:
			case want.has(k):
				good++
			default:
				bad++
			}
		}
		g.good.Add(good)
		g.bad.Add(bad)
	}
}

// drain waits until nothing is queued on the socket and its receiver has
// stopped counting, at most a second, and returns the count of packets
// with a wanted key.
func (g *rawSocket) drain() uint64 {
	good := g.good.Load()
	for range 200 {
		time.Sleep(5 * time.Millisecond)
		n := g.good.Load()
		if n == good && g.queued() == 0 {
			return n
		}
		good = n
	}
	return good
}

// queued is the size of the next datagram waiting, 0 if none (SIOCINQ on
// a raw socket).
func (g *rawSocket) queued() int {
	n := 0
	g.rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n
}

func (g *rawSocket) Close() error {
	err := g.c.Close()
	<-g.done
	return err
}

// flow is one direction of traffic: to dst, with the keys in turn.
type flow struct {
	dst     netip.Addr
	keys    []uint16
	payload int
}

// blast sends f from g for d on cpu as fast as sendmmsg goes and returns
// how many packets the kernel took, over how long.
func (g *rawSocket) blast(f flow, d time.Duration, cpu int) (blastResult, error) {
	// Packets for every key, built once; batches take them in turn.
	pkts := make([][]byte, len(f.keys))
	for i, k := range f.keys {
		pkts[i] = make([]byte, g.p.hdr+f.payload)
		g.p.build(pkts[i], k, f.payload)
	}
	dst := &net.IPAddr{IP: f.dst.AsSlice()}
	ms := make([]ipv4.Message, batch)
	for i := range ms {
		ms[i].Buffers = make([][]byte, 1)
		ms[i].Addr = dst
	}

	type result struct {
		n       uint64
		elapsed time.Duration
		cpu     time.Duration
		err     error
	}
	res := make(chan result, 1)
	go func() {
		defer pin(cpu)()
		var sent, errs uint64
		var lastErr error
		next := 0
		cpu0 := threadCPU() + softirqdCPU(cpu)
		start := time.Now()
		end := start.Add(d)
		now := start
		for now.Before(end) {
			for i := range ms {
				ms[i].Buffers[0] = pkts[next]
				if next++; next == len(pkts) {
					next = 0
				}
			}
			n, err := g.pc.WriteBatch(ms, 0)
			sent += uint64(max(n, 0))
			if err != nil {
				errs++
				lastErr = err
			}
			now = time.Now()
		}
		if errs > 0 && sent == 0 {
			res <- result{err: fmt.Errorf("%d send errors, last: %w", errs, lastErr)}
			return
		}
		res <- result{sent, now.Sub(start), threadCPU() + softirqdCPU(cpu) - cpu0, nil}
	}()
	r := <-res
	return blastResult{r.n, r.elapsed, r.cpu}, r.err
}

// blastResult is what a blast sent, over how long, and the CPU time the
// sending thread and the CPU's softirq thread used meanwhile. Without
// CONFIG_IRQ_TIME_ACCOUNTING, softirq work done on the way out of the
// sender's system calls, which is most of the forwarding, is the thread's
// time; what the kernel defers goes to ksoftirqd.
type blastResult struct {
	sent    uint64
	elapsed time.Duration
	cpu     time.Duration
}

// threadCPU is the calling thread's time on CPU.
func threadCPU() time.Duration { return schedstat("/proc/thread-self/schedstat") }

// softirqdCPU is the time on CPU of ksoftirqd/cpu.
func softirqdCPU(cpu int) time.Duration {
	ksoftirqdOnce.Do(func() {
		dirs, _ := os.ReadDir("/proc")
		for _, d := range dirs {
			c, err := os.ReadFile("/proc/" + d.Name() + "/comm")
			if err == nil && strings.HasPrefix(string(c), "ksoftirqd/") {
				n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(c), "ksoftirqd/")))
				ksoftirqd[n] = "/proc/" + d.Name() + "/schedstat"
			}
		}
	})
	if p, ok := ksoftirqd[cpu%runtime.NumCPU()]; ok {
		return schedstat(p)
	}
	return 0
}

var (
	ksoftirqdOnce sync.Once
	ksoftirqd     = map[int]string{} // CPU -> its ksoftirqd's schedstat
)

// schedstat reads the first field of a schedstat file: nanoseconds on CPU.
func schedstat(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	ns, _ := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns)
}

// pin locks the calling goroutine to its thread and binds the thread to
// one CPU, and returns what undoes both. The thread must not die locked:
// the lab starts its processes with a parent-death signal, which the kernel
// sends when the thread that forked them exits, whichever thread that was.
func pin(cpu int) (unpin func()) {
	runtime.LockOSThread()
	var old, set unix.CPUSet
	if unix.SchedGetaffinity(0, &old) != nil {
		return runtime.UnlockOSThread
	}
	set.Set(cpu % runtime.NumCPU())
	unix.SchedSetaffinity(0, &set)
	return func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}
}
