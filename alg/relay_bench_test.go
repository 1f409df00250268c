package alg

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
)

// Benchmarks of the relay over loopback TCP, through Relay.Serve as the
// daemon runs it, with an in-memory data plane. The peers on either side
// reuse fixed buffers, so allocations counted (process-wide) are the
// relay's and the net package's.

// benchPAC serves one control connection without allocating: it answers
// Echo-Request, Outgoing-Call-Request and Call-Clear-Request, and answers a
// Set-Link-Info with a WAN-Error-Notify for the same call, as a PAC reporting
// line errors would, so that both directions carry a call ID to translate.
func benchPAC(c net.Conn, serverIDs *atomic.Uint32) {
	defer c.Close()
	echoRep := (&EchoReply{ResultCode: 1}).Append(nil)
	ocrpMsg := (&OutgoingCallReply{ResultCode: OutgoingCallResultConnected}).Append(nil)
	wen := (&WANErrorNotify{CRCErrors: 1}).Append(nil)
	cdn := (&CallDisconnectNotify{ResultCode: 4}).Append(nil)
	var buf [MaxMessageLen]byte
	peerOf := map[uint16]uint16{} // server call ID -> peer's (NAT) call ID
	for {
		if _, err := io.ReadFull(c, buf[:HeaderLen]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(buf[:]))
		if n < HeaderLen || n > len(buf) {
			return
		}
		if _, err := io.ReadFull(c, buf[HeaderLen:n]); err != nil {
			return
		}
		var reply []byte
		switch MessageType(binary.BigEndian.Uint16(buf[8:])) {
		case TypeEchoRequest:
			copy(echoRep[12:16], buf[12:16])
			reply = echoRep
		case TypeOutgoingCallRequest:
			// Unique across the server's connections, as a PAC's call
			// IDs are (the relay refuses a client two calls with one).
			serverID := uint16(serverIDs.Add(1))
			peerOf[serverID] = get16(buf[:], 12)
			put16(ocrpMsg, 12, serverID)
			put16(ocrpMsg, 14, get16(buf[:], 12))
			reply = ocrpMsg
		case TypeSetLinkInfo:
			put16(wen, 12, peerOf[get16(buf[:], 12)])
			reply = wen
		case TypeCallClearRequest:
			put16(cdn, 12, get16(buf[:], 12)) // the peer's ID, as the kernel reads it
			reply = cdn
		}
		if reply != nil {
			if _, err := c.Write(reply); err != nil {
				return
			}
		}
	}
}

// benchPACAddr starts a benchPAC server and returns its address.
func benchPACAddr(b *testing.B) string {
	b.Helper()
	srv, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	var serverIDs atomic.Uint32
	serverIDs.Store(40000)
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go benchPAC(c, &serverIDs)
		}
	}()
	return srv.Addr().String()
}

// benchRelayAddr starts a relay in front of a benchPAC server and returns
// the relay's address.
func benchRelayAddr(b *testing.B) string {
	b.Helper()
	serverAddr := netip.MustParseAddrPort(benchPACAddr(b))
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	limits := Limits{ConnsPerClient: 1 << 20, CallsPerClient: 1 << 20, Calls: 1 << 20}
	r := &Relay{
		Table:       NewTable(newFakePlane(), limits, nil),
		OriginalDst: func(net.Conn) (netip.AddrPort, error) { return serverAddr, nil },
		Dial: func(ctx context.Context, _ netip.Addr, s netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp4", s.String())
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

// benchRelay returns a client connection through a new relay.
func benchRelay(b *testing.B) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp4", benchRelayAddr(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// benchExchange writes req and reads one reply of len(resp) bytes.
func benchExchange(b *testing.B, c net.Conn, req, resp []byte) {
	if _, err := c.Write(req); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, resp); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRelaySteadyState relays control messages on a connection whose
// calls are up; each op is one request and its answer, two relayed messages.
// Echo carries no call ID; Set-Link-Info (client to server) and
// WAN-Error-Notify (server to client, translated) do, with the calls'
// IDs colliding with another connection's so that translation is real.
func BenchmarkRelaySteadyState(b *testing.B) {
	for _, calls := range []int{1, 100} {
		for _, kind := range []string{"echo", "set-link-info"} {
			b.Run(kind+"/calls="+strconv.Itoa(calls), func(b *testing.B) {
				other := benchRelay(b) // holds client call IDs 1..calls first
				c := benchRelay(b)
				var resp [MaxMessageLen]byte
				var serverIDs []uint16
				for _, conn := range []net.Conn{other, c} {
					serverIDs = serverIDs[:0]
					for id := range uint16(calls) {
						benchExchange(b, conn, ocrq(id+1), resp[:TypeOutgoingCallReply.Len()])
						serverIDs = append(serverIDs, get16(resp[:], 12))
					}
				}
				req := (&EchoRequest{Identifier: 7}).Append(nil)
				respLen := TypeEchoReply.Len()
				if kind == "set-link-info" {
					// The last call: the relay's search of its calls is longest.
					req = (&SetLinkInfo{PeerCallID: serverIDs[len(serverIDs)-1]}).Append(nil)
					respLen = TypeWANErrorNotify.Len()
					benchExchange(b, c, req, resp[:respLen])
					if got := get16(resp[:], 12); got != uint16(calls) {
						b.Fatalf("WAN-Error-Notify for call %d, want the client's %d", got, calls)
					}
				}
				b.ReportAllocs()
				b.SetBytes(int64(len(req) + respLen))
				for b.Loop() {
					benchExchange(b, c, req, resp[:respLen])
				}
			})
		}
	}
}

// BenchmarkRelayCallSetupTeardown places and clears one call per op through
// the relay: Outgoing-Call-Request/Reply, Call-Clear-Request and
// Call-Disconnect-Notify, with the data plane in memory.
func BenchmarkRelayCallSetupTeardown(b *testing.B) {
	c := benchRelay(b)
	var resp [MaxMessageLen]byte
	req := ocrq(5)
	clear := (&CallClearRequest{CallID: 5}).Append(nil)
	b.ReportAllocs()
	for b.Loop() {
		benchExchange(b, c, req, resp[:TypeOutgoingCallReply.Len()])
		benchExchange(b, c, clear, resp[:TypeCallDisconnectNotify.Len()])
	}
}

// BenchmarkRelayMemoryPerConnection measures what an open control
// connection with one call holds in the Go heap and goroutine stacks: each
// op opens 100 connections, reports the growth per connection after a GC,
// and closes them. "direct" connects to the PAC without the relay, so the
// difference to "relayed" is the relay's share; the rest is the test's
// peers.
func BenchmarkRelayMemoryPerConnection(b *testing.B) {
	const conns = 100
	for _, relayed := range []bool{false, true} {
		name := "direct"
		if relayed {
			name = "relayed"
		}
		b.Run(name, func(b *testing.B) {
			var addr string
			if relayed {
				addr = benchRelayAddr(b)
			} else {
				addr = benchPACAddr(b)
			}
			var resp [MaxMessageLen]byte
			var perConn float64
			ops := 0
			for b.Loop() {
				before := inUse()
				cs := make([]net.Conn, 0, conns)
				for range conns {
					c, err := net.Dial("tcp4", addr)
					if err != nil {
						b.Fatal(err)
					}
					cs = append(cs, c)
					benchExchange(b, c, ocrq(1), resp[:TypeOutgoingCallReply.Len()])
				}
				perConn += float64(inUse()-before) / conns
				ops++
				for _, c := range cs {
					c.Close()
				}
			}
			b.ReportMetric(perConn/float64(ops), "B/conn")
		})
	}
}

// inUse is the heap and stack memory in use after a collection.
func inUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}
