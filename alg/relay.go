package alg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Relay carries PPTP control connections that the firewall redirected to
// it: it dials the server the client was talking to, and copies messages
// both ways, translating call IDs in place. Because it reads a byte
// stream and frames it itself, a message split across TCP segments or
// several packed into one are the same to it.
type Relay struct {
	Table *Table
	// OriginalDst returns where the client meant to connect.
	OriginalDst func(net.Conn) (netip.AddrPort, error)
	// Dial opens the connection to the server. from is the zero Addr for a
	// LAN client (dial from the WAN address) and the client's own address
	// for one of the router's own connections, which the server must see
	// come from the address the router's GRE leaves from.
	Dial func(ctx context.Context, from netip.Addr, server netip.AddrPort) (net.Conn, error)
	// Check, when set, vets an accepted connection before anything is
	// relayed; an error refuses it. It runs while the server is dialled.
	Check func(client, dst netip.AddrPort) error
	// ControlIdleTimeout closes a control connection once either side has
	// sent nothing for this long, or not taken what the relay wrote to it;
	// zero means DefaultControlIdleTimeout. It frees the calls of a peer
	// that vanished without a FIN or RST. (A call's GRE going idle is the
	// daemon's business, not the relay's.)
	ControlIdleTimeout time.Duration
	Log                *slog.Logger

	mu     sync.Mutex
	active map[*pair]struct{} // relayed connections, for CloseNotFrom
}

// DefaultControlIdleTimeout is three PPTP keep-alive intervals: a live peer
// sends an Echo-Request after 60 s without control traffic (RFC 2637
// section 2.4), and the other answers it.
const DefaultControlIdleTimeout = 3 * 60 * time.Second

// relayBufSize is the fixed buffer of each direction of a relayed
// connection, and so all the memory a peer can make the relay hold for it
// besides the kernel's socket buffers. It holds at least one whole message
// behind a partial one.
const relayBufSize = 4096

// CloseNotFrom closes every relayed connection whose server side is not
// bound to local, and returns how many it closed. After the WAN address
// changes, connections from the old one can never carry traffic again; their
// calls are released at once rather than when the peers give up.
func (r *Relay) CloseNotFrom(local netip.Addr, why string) int {
	r.mu.Lock()
	var stale []*pair
	for p := range r.active {
		if addrPortOf(p.server.LocalAddr()).Addr() != local {
			stale = append(stale, p)
		}
	}
	r.mu.Unlock()
	for _, p := range stale {
		p.closeWith(errors.New(why))
	}
	return len(stale)
}

// CloseSession closes the relayed control connection of s, which releases
// its calls, and reports whether it was open.
func (r *Relay) CloseSession(s *Session, why string) bool {
	r.mu.Lock()
	var found *pair
	for p := range r.active {
		if p.s == s {
			found = p
			break
		}
	}
	r.mu.Unlock()
	if found == nil {
		return false
	}
	found.closeWith(errors.New(why))
	return true
}

func (r *Relay) track(p *pair, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !on {
		delete(r.active, p)
		return
	}
	if r.active == nil {
		r.active = make(map[*pair]struct{})
	}
	r.active[p] = struct{}{}
}

// Serve accepts connections until ctx is done or ln fails.
func (r *Relay) Serve(ctx context.Context, ln net.Listener) error {
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of file descriptors: the tunnels already relayed keep
			// going; new connections wait in the backlog until some close.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				r.Log.Warn("relay: accept", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("relay: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.handle(ctx, c)
		}()
	}
}

func (r *Relay) handle(ctx context.Context, client net.Conn) {
	defer client.Close()
	from := addrPortOf(client.RemoteAddr())
	log := r.Log.With("client", from)
	dst, err := r.OriginalDst(client)
	if err != nil {
		log.Warn("control connection dropped", "err", err)
		return
	}
	log = log.With("server", dst)
	// The check is a netlink round trip, as long as the server's TCP
	// handshake; it runs meanwhile, and nothing is relayed before it passed.
	checked := make(chan error, 1)
	if r.Check != nil {
		go func() { checked <- r.Check(from, dst) }()
	} else {
		checked <- nil
	}
	s, err := r.Table.OpenSession(from.Addr(), dst.Addr())
	if err != nil {
		log.Warn("control connection refused", "err", err)
		<-checked
		return
	}
	defer s.Close()

	// The router's own connections reach the relay through a redirect in
	// the output hook, which takes them to the loopback address; the LAN's
	// arrive at the LAN interface's address.
	var own netip.Addr
	if addrPortOf(client.LocalAddr()).Addr().IsLoopback() {
		own = from.Addr()
		log = log.With("router", true)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	server, err := r.Dial(dctx, own, dst)
	cancel()
	if cerr := <-checked; cerr != nil {
		if server != nil {
			server.Close()
		}
		log.Error("control connection refused", "err", cerr)
		return
	}
	if err != nil {
		log.Warn("control connection dropped: cannot reach server", "err", err)
		return
	}
	defer server.Close()
	log.Info("control connection open")

	// Either side ending, or a malformed message, ends both.
	idle := r.ControlIdleTimeout
	if idle <= 0 {
		idle = DefaultControlIdleTimeout
	}
	p := &pair{client: client, server: server, s: s, idle: idle}
	r.track(p, true)
	defer r.track(p, false)
	stop := context.AfterFunc(ctx, p.close)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- p.pump(client, server, true) }()
	go func() { errc <- p.pump(server, client, false) }()
	err = <-errc
	p.close()
	<-errc
	if p.reason != nil {
		err = p.reason
	}
	switch {
	case err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		log.Info("control connection closed")
	default:
		log.Warn("control connection closed", "reason", err)
	}
}

// pair is one relayed control connection.
type pair struct {
	client, server net.Conn
	s              *Session
	idle           time.Duration
	clientWrite    sync.Mutex // the client hears from both pumps
	closeOnce      sync.Once
	reason         error // why the relay closed it; read after close
}

func (p *pair) close() { p.closeWith(nil) }

// closeWith closes both sides; the first caller's reason is the one logged.
func (p *pair) closeWith(why error) {
	p.closeOnce.Do(func() {
		p.reason = why
		p.client.Close()
		p.server.Close()
	})
}

// pump copies whole messages from src to dst. Messages are patched in
// place and written in the batches they arrived in, so the relay adds no
// segmentation of its own and allocates nothing per message.
func (p *pair) pump(src, dst net.Conn, fromClient bool) error {
	side := "server"
	if fromClient {
		side = "client"
	}
	var buf [relayBufSize]byte
	var msgs []readMsg // one read's, reused
	have := 0
	for {
		src.SetReadDeadline(time.Now().Add(p.idle))
		n, err := src.Read(buf[have:])
		if n == 0 && err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				return fmt.Errorf("%s sent nothing for %v", side, p.idle)
			case have > 0 && errors.Is(err, io.EOF):
				return fmt.Errorf("%s ended the stream inside a message (%d bytes)", side, have)
			}
			return err
		}
		have += n
		msgs = msgs[:0]
		off := 0
		for {
			m, ferr := Frame(buf[off:have])
			if ferr != nil {
				return fmt.Errorf("from %s: %w", side, ferr)
			}
			if m == 0 {
				break
			}
			msgs = append(msgs, readMsg{start: off, end: off + m})
			off += m
		}
		if err := p.s.translate(buf[:], msgs, fromClient, p.writeClient); err != nil {
			return err
		}
		out := 0
		for _, m := range msgs {
			if m.forward {
				out += copy(buf[out:], buf[m.start:m.end])
			}
		}
		if out > 0 {
			if fromClient {
				dst.SetWriteDeadline(time.Now().Add(p.idle))
				if _, err = dst.Write(buf[:out]); errors.Is(err, os.ErrDeadlineExceeded) {
					err = fmt.Errorf("server read nothing for %v", p.idle)
				}
			} else {
				err = p.writeClient(buf[:out])
			}
			if err != nil {
				return err
			}
		}
		// What is left is part of one message, so the next read always
		// has room.
		have = copy(buf[:], buf[off:have])
	}
}

func (p *pair) writeClient(b []byte) error {
	p.clientWrite.Lock()
	defer p.clientWrite.Unlock()
	p.client.SetWriteDeadline(time.Now().Add(p.idle))
	_, err := p.client.Write(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("client read nothing for %v", p.idle)
	}
	return err
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
