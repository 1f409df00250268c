package alg

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer is a minimal PAC on loopback: it answers each Outgoing-Call-
// Request with a reply carrying serverID++ and reports the call IDs it saw.
type echoServer struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []uint16 // call IDs of the requests, as the server received them
}

func startEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	es := &echoServer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		next := uint16(500)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := &messageReader{r: c}
				for {
					m, err := r.next()
					if err != nil {
						return
					}
					if req, ok := m.(*OutgoingCallRequest); ok {
						es.mu.Lock()
						es.seen = append(es.seen, req.CallID)
						next++
						id := next
						es.mu.Unlock()
						c.Write(ocrp(id, req.CallID, OutgoingCallResultConnected))
					}
				}
			}()
		}
	}()
	return es
}

// messageReader frames a control stream for the tests' own peers.
type messageReader struct {
	r   io.Reader
	buf []byte
}

func (mr *messageReader) next() (Message, error) {
	for {
		n, err := Frame(mr.buf)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			m, err := Parse(mr.buf[:n])
			mr.buf = mr.buf[n:]
			return m, err
		}
		var tmp [512]byte
		k, err := mr.r.Read(tmp[:])
		if k == 0 && err != nil {
			return nil, err
		}
		mr.buf = append(mr.buf, tmp[:k]...)
	}
}

func startRelay(t *testing.T, tab *Table, server netip.AddrPort) net.Addr {
	t.Helper()
	return startRelayWith(t, &Relay{Table: tab}, server)
}

// startRelayWith serves r on loopback; OriginalDst and Dial are filled in
// unless set.
func startRelayWith(t *testing.T, r *Relay, server netip.AddrPort) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if r.OriginalDst == nil {
		r.OriginalDst = func(net.Conn) (netip.AddrPort, error) { return server, nil }
	}
	if r.Dial == nil {
		r.Dial = func(ctx context.Context, _ netip.Addr, s netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp4", s.String())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr()
}

func TestRelaySegmentation(t *testing.T) {
	for _, mode := range []string{"split", "coalesced", "whole"} {
		t.Run(mode, func(t *testing.T) {
			es := startEchoServer(t)
			tab := NewTable(newFakePlane(), DefaultLimits, nil)
			addr := startRelay(t, tab, es.ln.Addr().(*net.TCPAddr).AddrPort())

			// Another host already holds call ID 1 toward this server.
			other, _ := tab.OpenSession(hostB, netip.MustParseAddr("127.0.0.1"))
			dial(t, other, 1, 1)

			c, err := net.Dial("tcp4", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.(*net.TCPConn).SetNoDelay(true)
			var stream []byte
			stream = (&StartControlConnectionRequest{ProtocolVersion: 0x0100}).Append(stream)
			for _, id := range []uint16{1, 2, 3} {
				stream = append(stream, ocrq(id)...)
			}
			switch mode {
			case "split":
				for i := 0; i < len(stream); i += 5 {
					c.Write(stream[i:min(i+5, len(stream))])
					time.Sleep(time.Millisecond)
				}
			case "coalesced":
				c.Write(stream)
			case "whole":
				for len(stream) > 0 {
					n, _ := Frame(stream)
					c.Write(stream[:n])
					stream = stream[n:]
				}
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			mr := &messageReader{r: c}
			got := map[uint16]bool{}
			for range 3 {
				m, err := mr.next()
				if err != nil {
					t.Fatal(err)
				}
				got[m.(*OutgoingCallReply).PeerCallID] = true
			}
			if !got[1] || !got[2] || !got[3] {
				t.Fatalf("replies reached the client for call IDs %v, want 1, 2, 3", got)
			}
			es.mu.Lock()
			seen := append([]uint16(nil), es.seen...)
			es.mu.Unlock()
			if len(seen) != 3 || seen[0] == 1 {
				t.Fatalf("server saw call IDs %v; want three, the first translated away from 1", seen)
			}
			var established int
			for _, ci := range tab.Calls() {
				if ci.Established {
					established++
				}
			}
			if established != 4 {
				t.Fatalf("%d established calls, want 4", established)
			}
		})
	}
}

func TestRelayMalformedStreamClosesOnlyThatConnection(t *testing.T) {
	es := startEchoServer(t)
	tab := NewTable(newFakePlane(), DefaultLimits, nil)
	addr := startRelay(t, tab, es.ln.Addr().(*net.TCPAddr).AddrPort())

	good, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	good.Write(ocrq(1))
	good.SetDeadline(time.Now().Add(5 * time.Second))
	gr := &messageReader{r: good}
	if _, err := gr.next(); err != nil {
		t.Fatal(err)
	}

	bad, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	junk := ocrq(2)
	junk[4] ^= 0xff // bad magic cookie
	bad.Write(junk)
	bad.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := bad.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("malformed connection: read err = %v, want EOF", err)
	}

	// The good connection still works.
	good.Write(ocrq(3))
	m, err := gr.next()
	if err != nil {
		t.Fatal(err)
	}
	if r := m.(*OutgoingCallReply); r.PeerCallID != 3 {
		t.Fatalf("reply peer call ID %d, want 3", r.PeerCallID)
	}
	time.Sleep(50 * time.Millisecond)
	if n := tab.Sessions(); n != 1 {
		t.Fatalf("%d sessions open, want 1", n)
	}
}

func TestRelayClosingReleasesCalls(t *testing.T) {
	es := startEchoServer(t)
	tab := NewTable(newFakePlane(), DefaultLimits, nil)
	addr := startRelay(t, tab, es.ln.Addr().(*net.TCPAddr).AddrPort())
	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(append(ocrq(1), ocrq(2)...))
	c.SetDeadline(time.Now().Add(5 * time.Second))
	mr := &messageReader{r: c}
	mr.next()
	mr.next()
	if n := len(tab.Calls()); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
	c.(*net.TCPConn).SetLinger(0) // a reset
	c.Close()
	deadline := time.Now().Add(2 * time.Second)
	for len(tab.Calls()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(tab.Calls()); n != 0 {
		t.Fatalf("%d calls left 2 s after the reset", n)
	}
}

// syncBuffer is a log sink the relay's goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRelayControlIdleTimeout(t *testing.T) {
	es := startEchoServer(t)
	tab := NewTable(newFakePlane(), DefaultLimits, nil)
	var logged syncBuffer
	r := &Relay{Table: tab, ControlIdleTimeout: 300 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&logged, nil))}
	addr := startRelayWith(t, r, es.ln.Addr().(*net.TCPAddr).AddrPort())

	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mr := &messageReader{r: c}
	// A client that keeps talking stays, well past the timeout.
	start := time.Now()
	for i := uint16(1); time.Since(start) < time.Second; i++ {
		c.Write(ocrq(i))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := mr.next(); err != nil {
			t.Fatalf("after %v of traffic: %v", time.Since(start), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Then it goes quiet, as one that vanished would.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("quiet connection: read err = %v, want EOF", err)
	}
	waitFor(t, "calls released", func() bool { return len(tab.Calls()) == 0 && tab.Sessions() == 0 })
	if !strings.Contains(logged.String(), "sent nothing for 300ms") {
		t.Errorf("no log line giving the reason:\n%s", logged.String())
	}
}

func TestRelayCloseNotFrom(t *testing.T) {
	es := startEchoServer(t)
	tab := NewTable(newFakePlane(), DefaultLimits, nil)
	// The first connection goes out from 127.0.0.2, the next from 127.0.0.3:
	// a WAN address that changed in between.
	var dials int
	var mu sync.Mutex
	r := &Relay{Table: tab, Dial: func(ctx context.Context, _ netip.Addr, s netip.AddrPort) (net.Conn, error) {
		mu.Lock()
		dials++
		local := netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + dials)})
		mu.Unlock()
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))}
		return d.DialContext(ctx, "tcp4", s.String())
	}}
	addr := startRelayWith(t, r, es.ln.Addr().(*net.TCPAddr).AddrPort())
	var conns []net.Conn
	var readers []*messageReader
	for i := range 2 {
		c, err := net.Dial("tcp4", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		mr := &messageReader{r: c}
		c.Write(ocrq(uint16(10 + i)))
		if _, err := mr.next(); err != nil {
			t.Fatal(err)
		}
		conns, readers = append(conns, c), append(readers, mr)
	}
	if n := r.CloseNotFrom(netip.MustParseAddr("127.0.0.3"), "WAN address changed"); n != 1 {
		t.Fatalf("CloseNotFrom closed %d connections, want 1", n)
	}
	if _, err := conns[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection from the old address: read err = %v, want EOF", err)
	}
	waitFor(t, "the old connection's call released", func() bool { return len(tab.Calls()) == 1 })
	if c := tab.Calls()[0]; c.ClientCallID != 11 {
		t.Fatalf("call left: %+v; want the second connection's", c)
	}
	conns[1].Write(ocrq(12))
	if _, err := readers[1].next(); err != nil {
		t.Fatalf("connection from the new address: %v", err)
	}
}

// TestRelayBufferBounded states what a connection can make the relay hold:
// one fixed array per direction, which always has room for a whole message
// behind a partial one, however the peer writes.
func TestRelayBufferBounded(t *testing.T) {
	if relayBufSize < 2*MaxMessageLen {
		t.Fatalf("relay buffer %d bytes; a partial message and a whole one need %d", relayBufSize, 2*MaxMessageLen)
	}
	es := startEchoServer(t)
	tab := NewTable(newFakePlane(), Limits{CallsPerClient: 100000, Calls: 100000, ConnsPerClient: 1}, nil)
	addr := startRelay(t, tab, es.ln.Addr().(*net.TCPAddr).AddrPort())
	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 64 KiB of requests in one write, replies read meanwhile.
	const n = 400
	var stream []byte
	for i := range n {
		stream = append(stream, ocrq(uint16(i+1))...)
	}
	go c.Write(stream)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	mr := &messageReader{r: c}
	for i := range n {
		if _, err := mr.next(); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
}

// A connection that Check refuses gets nothing relayed either way, whether
// the check answers before the server's handshake or after it: the server
// reads nothing, the client is closed, and no call or session is left.
func TestRelayCheckRefuses(t *testing.T) {
	for _, slow := range []string{"check", "dial"} {
		t.Run("slow "+slow, func(t *testing.T) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan int, 1) // bytes the server read before the relay closed
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- -1
					return
				}
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, _ := io.Copy(io.Discard, c)
				got <- int(n)
			}()
			delay := func(what string) {
				if what == slow {
					time.Sleep(100 * time.Millisecond)
				}
			}
			tab := NewTable(newFakePlane(), DefaultLimits, nil)
			r := &Relay{
				Table: tab,
				Check: func(client, dst netip.AddrPort) error {
					delay("check")
					return errors.New("refused for the test")
				},
				Dial: func(ctx context.Context, _ netip.Addr, s netip.AddrPort) (net.Conn, error) {
					delay("dial")
					var d net.Dialer
					return d.DialContext(ctx, "tcp4", s.String())
				},
			}
			addr := startRelayWith(t, r, ln.Addr().(*net.TCPAddr).AddrPort())
			c, err := net.Dial("tcp4", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(ocrq(1))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 64)); err == nil {
				t.Fatalf("client read %d bytes from a refused connection", n)
			} else if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the refused connection was not closed within 5 s")
			}
			if n := <-got; n != 0 {
				t.Fatalf("server read %d bytes of a refused connection", n)
			}
			waitFor(t, "the session closed", func() bool { return tab.Sessions() == 0 && tab.Len() == 0 })
		})
	}
}

// TestRelayReadAddsTogether: the Outgoing-Call-Requests of one read have
// their inbound halves added in one AddMany, as do the replies' outbound
// halves; an addition the data plane refuses refuses that call alone.
func TestRelayReadAddsTogether(t *testing.T) {
	es := startEchoServer(t)
	dp := newFakePlane()
	dp.refuse = func(a Addition) error {
		if !a.Outbound && a.ClientID == 2 {
			return errors.New("refused for the test")
		}
		return nil
	}
	tab := NewTable(dp, DefaultLimits, nil)
	addr := startRelay(t, tab, es.ln.Addr().(*net.TCPAddr).AddrPort())
	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(append(append(ocrq(1), ocrq(2)...), ocrq(3)...))
	c.SetDeadline(time.Now().Add(5 * time.Second))
	mr := &messageReader{r: c}
	results := map[uint16]uint8{}
	for len(results) < 3 {
		m, err := mr.next()
		if err != nil {
			t.Fatalf("after %d replies: %v", len(results), err)
		}
		if r, ok := m.(*OutgoingCallReply); ok {
			results[r.PeerCallID] = r.ResultCode
		}
	}
	if results[1] != OutgoingCallResultConnected || results[3] != OutgoingCallResultConnected ||
		results[2] != OutgoingCallResultGeneralError {
		t.Errorf("results by client call ID %v; want 1 and 3 connected, 2 refused", results)
	}
	waitFor(t, "two calls established", func() bool {
		n := 0
		for _, ci := range tab.Calls() {
			if ci.Established {
				n++
			}
		}
		return n == 2
	})
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if len(dp.many) == 0 || len(dp.many[0]) != 3 {
		t.Fatalf("AddMany calls %v; want the first with the 3 requests' inbound halves", dp.many)
	}
	if in, out := len(dp.in), len(dp.out); in != 2 || out != 2 {
		t.Errorf("plane holds %d inbound, %d outbound; want 2 and 2", in, out)
	}
}
