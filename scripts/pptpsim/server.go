package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"

	"github.com/pptp-alg/pptp-alg/alg"
)

// cdnMode says which call ID the server puts in a Call-Disconnect-Notify.
type cdnMode string

const (
	cdnRFC    cdnMode = "rfc"    // the PAC's own ID, as RFC 2637 section 2.13 says
	cdnKernel cdnMode = "kernel" // the PNS's ID, as Linux nf_conntrack_pptp reads it
)

type serverConfig struct {
	listen      string
	firstCallID uint16
	cdn         cdnMode
	earlyGRE    bool
	sendSLI     bool
	segment     segmentMode
}

// server is a PAC that accepts any number of control connections and
// echoes each call's GRE back to whoever sent it.
type server struct {
	cfg serverConfig
	log *slog.Logger
	out *emitter
	gre *greConn

	mu     sync.Mutex
	next   uint16                   // the next server call ID to try
	calls  map[uint16]*serverCall   // by server call ID, across connections
	conns  map[*serverConn]struct{} // to close them on shutdown
	closed bool
}

// serverCall is one call: S is the server's ID, P the peer's as the server
// sees it (after any translation by a router).
type serverCall struct {
	S, P  uint16
	conn  *serverConn
	seq   uint32    // the next GRE sequence number sent on this call
	early sync.Once // --early-gre: the call's first GRE packet
}

type serverConn struct {
	c       net.Conn
	peer    net.IP // GRE destination of --early-gre
	name    string // peer address and port, naming the connection in events
	w       *controlWriter
	stopped bool // a Stop-Control-Connection-Request was answered
}

func runServer(ctx context.Context, cfg serverConfig, out *emitter, log *slog.Logger) error {
	ln, err := net.Listen("tcp4", cfg.listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	laddr := ln.Addr().(*net.TCPAddr)
	gre, err := listenGRE(laddr.IP)
	if err != nil {
		return err
	}
	defer gre.Close()

	s := &server{
		cfg:   cfg,
		log:   log,
		out:   out,
		gre:   gre,
		next:  cfg.firstCallID,
		calls: make(map[uint16]*serverCall),
		conns: make(map[*serverConn]struct{}),
	}
	out.emit("listening", "addr", laddr.String())
	log.Info("listening", "addr", laddr)

	var wg sync.WaitGroup
	wg.Go(s.echoGRE)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.serve(c) })
		}
	})

	<-ctx.Done()
	s.mu.Lock()
	s.closed = true
	for sc := range s.conns {
		sc.c.Close()
	}
	s.mu.Unlock()
	ln.Close()
	gre.Close()
	wg.Wait()
	log.Info("stopped")
	return nil
}

// serve runs one control connection. Replies to all messages that arrived
// together go out together, so a coalescing client gets coalesced replies
// in coalesce mode.
func (s *server) serve(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	raddr := c.RemoteAddr().(*net.TCPAddr)
	sc := &serverConn{c: c, peer: raddr.IP, name: raddr.String(), w: newControlWriter(c, s.cfg.segment)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	log := s.log.With("conn", sc.name)
	s.out.emit("connected", "peer", sc.peer.String(), "conn", sc.name)
	log.Info("connected")

	r := newControlReader(c)
	var replies []alg.Message
	var after []func()
	var err error
	for {
		var m alg.Message
		if m, err = r.next(); err != nil {
			break
		}
		log.Debug("received", "type", m.Type())
		rs, as := s.handle(sc, m, log)
		replies = append(replies, rs...)
		after = append(after, as...)
		if r.buffered() {
			continue
		}
		if err = sc.w.send(replies...); err != nil {
			break
		}
		for _, f := range after {
			f()
		}
		replies, after = replies[:0], after[:0]
	}
	c.Close()

	s.mu.Lock()
	delete(s.conns, sc)
	shutdown := s.closed
	var open []uint16
	for id, call := range s.calls {
		if call.conn == sc {
			open = append(open, id)
			delete(s.calls, id)
		}
	}
	s.mu.Unlock()
	reason := closeReason(err)
	if shutdown {
		reason = "shutdown"
	}
	s.out.emit("closed", "peer", sc.peer.String(), "conn", sc.name, "reason", reason,
		"stopped", sc.stopped, "open_calls", len(open))
	log.Info("closed", "reason", reason, "err", err, "open_calls", len(open))
}

func closeReason(err error) string {
	switch {
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, alg.ErrBadLength), errors.Is(err, alg.ErrBadMagic),
		errors.Is(err, alg.ErrNotControl), errors.Is(err, alg.ErrUnknownType):
		return "bad-message"
	}
	return "error"
}

// handle returns the replies to m and what to do once they are written.
func (s *server) handle(sc *serverConn, m alg.Message, log *slog.Logger) ([]alg.Message, []func()) {
	switch m := m.(type) {
	case *alg.StartControlConnectionRequest:
		return []alg.Message{&alg.StartControlConnectionReply{
			ProtocolVersion:     protocolVersion,
			ResultCode:          resultOK,
			FramingCapabilities: framingAsyncSync,
			BearerCapabilities:  bearerAnalogDigital,
			FirmwareRevision:    1,
			HostName:            name64("pptpsim"),
			VendorString:        name64("pptp-alg"),
		}}, nil

	case *alg.EchoRequest:
		return []alg.Message{&alg.EchoReply{Identifier: m.Identifier, ResultCode: resultOK}}, nil

	case *alg.StopControlConnectionRequest:
		sc.stopped = true
		s.out.emit("stop", "peer", sc.peer.String(), "conn", sc.name)
		return []alg.Message{&alg.StopControlConnectionReply{ResultCode: resultOK}}, nil

	case *alg.OutgoingCallRequest:
		return s.outgoingCall(sc, m, log)

	case *alg.CallClearRequest:
		call := s.callByPeer(sc, m.CallID)
		if call == nil {
			// A PAC does not answer for a call it does not know.
			s.out.emit("clear", "peer", sc.peer.String(), "conn", sc.name,
				"peer_call_id", m.CallID, "server_call_id", nil, "known", false)
			log.Warn("call-clear-request for unknown call", "peer_call_id", m.CallID)
			return nil, nil
		}
		s.mu.Lock()
		delete(s.calls, call.S)
		s.mu.Unlock()
		id := call.S
		if s.cfg.cdn == cdnKernel {
			id = call.P
		}
		s.out.emit("clear", "peer", sc.peer.String(), "conn", sc.name,
			"peer_call_id", call.P, "server_call_id", call.S, "known", true, "cdn_call_id", id)
		log.Info("call cleared", "peer_call_id", call.P, "server_call_id", call.S, "cdn_call_id", id)
		return []alg.Message{&alg.CallDisconnectNotify{CallID: id, ResultCode: cdnResultRequest}}, nil

	case *alg.SetLinkInfo:
		s.mu.Lock()
		call := s.calls[m.PeerCallID]
		known := call != nil && call.conn == sc
		s.mu.Unlock()
		s.out.emit("sli", "peer", sc.peer.String(), "conn", sc.name, "peer_call_id", m.PeerCallID, "known", known)
		return nil, nil
	}
	log.Info("ignored", "type", m.Type())
	return nil, nil
}

func (s *server) outgoingCall(sc *serverConn, m *alg.OutgoingCallRequest, log *slog.Logger) ([]alg.Message, []func()) {
	call, ok := s.newCall(sc, m.CallID)
	if !ok {
		log.Warn("out of call IDs")
		return []alg.Message{&alg.OutgoingCallReply{
			PeerCallID: m.CallID,
			ResultCode: alg.OutgoingCallResultGeneralError,
			ErrorCode:  alg.ErrorCodeNoResource,
		}}, nil
	}
	s.out.emit("call", "peer", sc.peer.String(), "conn", sc.name, "peer_call_id", call.P, "server_call_id", call.S)
	log.Info("call", "peer_call_id", call.P, "server_call_id", call.S)
	replies := []alg.Message{&alg.OutgoingCallReply{
		CallID:           call.S,
		PeerCallID:       call.P,
		ResultCode:       alg.OutgoingCallResultConnected,
		ConnectSpeed:     connectSpeed,
		PacketRecvWindow: recvWindow,
	}}
	if s.cfg.sendSLI {
		replies = append(replies, &alg.SetLinkInfo{PeerCallID: call.P, SendACCM: 0xffffffff, ReceiveACCM: 0xffffffff})
	}
	var after []func()
	if s.cfg.earlyGRE {
		after = append(after, func() { s.sendEarly(call) })
	}
	return replies, after
}

// sendEarly sends a call's unasked GRE packet, like pppd's first LCP frame:
// after the reply, so that a router already knows the call, and before
// any echo, so that the client has it when its pings are answered.
func (s *server) sendEarly(call *serverCall) {
	call.early.Do(func() {
		payload := fmt.Appendf(nil, "%sserver=%d", earlyPrefix, call.S)
		if err := s.gre.send(call.conn.peer, s.nextHeader(call, greHeader{}), payload); err != nil {
			s.log.Warn("early gre", "conn", call.conn.name, "err", err)
		}
	})
}

// newCall allocates the next free server call ID, unique across all
// connections.
func (s *server) newCall(sc *serverConn, peerID uint16) (*serverCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 1 << 16 {
		id := s.next
		s.next++
		if _, used := s.calls[id]; !used {
			call := &serverCall{S: id, P: peerID, conn: sc}
			s.calls[id] = call
			return call, true
		}
	}
	return nil, false
}

// callByPeer finds a call of sc by the peer's ID: the first one, if the
// peer gave several calls the same ID.
func (s *server) callByPeer(sc *serverConn, p uint16) *serverCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var found *serverCall
	for _, call := range s.calls {
		if call.conn == sc && call.P == p && (found == nil || call.S < found.S) {
			found = call
		}
	}
	return found
}

// nextHeader returns h for call with the call's next sequence number.
func (s *server) nextHeader(call *serverCall, h greHeader) greHeader {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.CallID, h.HasSeq, h.Seq = call.P, true, call.seq
	call.seq++
	return h
}

// echoGRE answers every GRE packet for a known call with the same payload,
// sent to the packet's source with the peer's call ID.
func (s *server) echoGRE() {
	buf := make([]byte, 1<<16)
	for {
		h, payload, from, err := s.gre.recv(buf)
		if err != nil {
			return
		}
		s.mu.Lock()
		call := s.calls[h.CallID]
		s.mu.Unlock()
		if call == nil {
			s.out.emit("gre", "from", from.String(), "call_id", h.CallID, "known", false)
			s.log.Debug("gre for unknown call", "from", from, "call_id", h.CallID)
			continue
		}
		s.out.emit("gre", "from", from.String(), "call_id", h.CallID, "known", true, "conn", call.conn.name)
		if s.cfg.earlyGRE {
			s.sendEarly(call)
		}
		reply := greHeader{HasAck: h.HasSeq, Ack: h.Seq}
		if err := s.gre.send(from, s.nextHeader(call, reply), payload); err != nil {
			s.log.Warn("gre echo", "to", from, "err", err)
		}
	}
}

func name64(s string) (b [64]byte) {
	copy(b[:], s)
	return b
}
