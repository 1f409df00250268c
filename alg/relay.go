package alg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
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
	// Dial opens the connection to the server, from the WAN address.
	Dial func(ctx context.Context, server netip.AddrPort) (net.Conn, error)
	// Check, when set, vets an accepted connection before it is relayed;
	// an error refuses it.
	Check func(client net.Conn) error
	Log   *slog.Logger
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
	if r.Check != nil {
		if err := r.Check(client); err != nil {
			log.Error("control connection refused", "err", err)
			return
		}
	}
	s, err := r.Table.OpenSession(from.Addr(), dst.Addr())
	if err != nil {
		log.Warn("control connection refused", "err", err)
		return
	}
	defer s.Close()

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	server, err := r.Dial(dctx, dst)
	cancel()
	if err != nil {
		log.Warn("control connection dropped: cannot reach server", "err", err)
		return
	}
	defer server.Close()
	log.Info("control connection open")

	// Either side ending, or a malformed message, ends both.
	p := &pair{client: client, server: server, s: s}
	stop := context.AfterFunc(ctx, p.close)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- p.pump(client, server, true) }()
	go func() { errc <- p.pump(server, client, false) }()
	err = <-errc
	p.close()
	<-errc
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
	clientWrite    sync.Mutex // the client hears from both pumps
	closeOnce      sync.Once
}

func (p *pair) close() {
	p.closeOnce.Do(func() {
		p.client.Close()
		p.server.Close()
	})
}

// pump copies whole messages from src to dst. Messages are patched in
// place and written in the batches they arrived in, so the relay adds no
// segmentation of its own and allocates nothing per message.
func (p *pair) pump(src, dst net.Conn, fromClient bool) error {
	var buf [4096]byte
	have := 0
	for {
		n, err := src.Read(buf[have:])
		if n == 0 && err != nil {
			if have > 0 && errors.Is(err, io.EOF) {
				return fmt.Errorf("stream ended inside a message (%d bytes)", have)
			}
			return err
		}
		have += n
		out, off := 0, 0
		for {
			m, ferr := Frame(buf[off:have])
			if ferr != nil {
				if fromClient {
					return fmt.Errorf("from client: %w", ferr)
				}
				return fmt.Errorf("from server: %w", ferr)
			}
			if m == 0 {
				break
			}
			msg := buf[off : off+m]
			off += m
			forward := true
			if fromClient {
				var reply []byte
				forward, reply, err = p.s.fromClient(msg)
				if err == nil && reply != nil {
					err = p.writeClient(reply)
				}
			} else {
				err = p.s.fromServer(msg)
			}
			if err != nil {
				return err
			}
			if forward {
				out += copy(buf[out:], msg)
			}
		}
		if out > 0 {
			if fromClient {
				_, err = dst.Write(buf[:out])
			} else {
				err = p.writeClient(buf[:out])
			}
			if err != nil {
				return err
			}
		}
		have = copy(buf[:], buf[off:have])
	}
}

func (p *pair) writeClient(b []byte) error {
	p.clientWrite.Lock()
	defer p.clientWrite.Unlock()
	_, err := p.client.Write(b)
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
