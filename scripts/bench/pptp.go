package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
)

// A lean PPTP control plane (RFC 2637 section 2) for load: a PAC that
// answers any number of calls on any number of connections, and a PNS that
// opens and clears calls in batches. Both work on raw bytes and reuse their
// buffers, so the load generator costs little CPU next to the router under
// test.

// Field values nobody checks, as real peers send them.
const (
	protocolVersion = 0x0100
	framingAsync    = 3
	bearerAnalog    = 3
	resultOK        = 1
	cdnRequest      = 4 // Call-Disconnect-Notify: Call-Clear-Request received
)

// Server call IDs come from the upper half of the ID space, so they never
// equal a NAT call ID that pptp-alg hands out from the bottom.
const (
	firstServerID = 0x8000
	serverIDs     = 0x8000
)

// msgReader frames a control stream into whole messages.
type msgReader struct {
	c          net.Conn
	buf        []byte
	start, end int
}

func newMsgReader(c net.Conn) *msgReader {
	return &msgReader{c: c, buf: make([]byte, 16<<10)}
}

// next returns the next whole message; it is valid until the next call.
func (r *msgReader) next() ([]byte, error) {
	for {
		n, err := alg.Frame(r.buf[r.start:r.end])
		if err != nil {
			return nil, err
		}
		if n > 0 {
			m := r.buf[r.start : r.start+n]
			r.start += n
			return m, nil
		}
		if r.start > 0 {
			r.end = copy(r.buf, r.buf[r.start:r.end])
			r.start = 0
		}
		k, err := r.c.Read(r.buf[r.end:])
		r.end += k
		if k == 0 && err != nil {
			return nil, err
		}
	}
}

// buffered reports whether a whole message is waiting.
func (r *msgReader) buffered() bool {
	n, _ := alg.Frame(r.buf[r.start:r.end])
	return n > 0
}

func msgType(m []byte) alg.MessageType { return alg.MessageType(binary.BigEndian.Uint16(m[8:])) }
func get16(m []byte, off int) uint16   { return binary.BigEndian.Uint16(m[off:]) }

// pacCall is a call as the PAC sees it: the peer's address and the peer's
// call ID after any translation by the router.
type pacCall struct {
	Peer   netip.Addr
	PeerID uint16
	conn   *pacConn
}

// pac is the server. Replies to every message of one read go out in one
// write.
type pac struct {
	ln net.Listener

	mu    sync.Mutex
	next  uint16
	calls map[uint16]*pacCall // by server call ID
	conns map[*pacConn]bool
	wg    sync.WaitGroup
}

type pacConn struct {
	c    net.Conn
	peer netip.Addr
	byID map[uint16]uint16 // peer call ID -> server call ID
}

func newPAC(ln net.Listener) *pac {
	s := &pac{ln: ln, next: firstServerID, calls: map[uint16]*pacCall{}, conns: map[*pacConn]bool{}}
	s.wg.Go(s.accept)
	return s
}

func (s *pac) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		pc := &pacConn{c: c, peer: ap.Addr().Unmap(), byID: map[uint16]uint16{}}
		s.mu.Lock()
		s.conns[pc] = true
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(pc) })
	}
}

// Close stops accepting, closes every connection and waits.
func (s *pac) Close() {
	s.ln.Close()
	s.mu.Lock()
	for pc := range s.conns {
		pc.c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// lookup returns the call with server call ID id.
func (s *pac) lookup(id uint16) (pacCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.calls[id]
	if !ok {
		return pacCall{}, false
	}
	return *c, true
}

func (s *pac) serve(pc *pacConn) {
	defer func() {
		pc.c.Close()
		s.mu.Lock()
		for _, sid := range pc.byID {
			delete(s.calls, sid)
		}
		delete(s.conns, pc)
		s.mu.Unlock()
	}()
	r := newMsgReader(pc.c)
	out := make([]byte, 0, 16<<10)
	for {
		m, err := r.next()
		if err != nil {
			return
		}
		out = s.reply(pc, m, out)
		if r.buffered() && len(out) < cap(out)-alg.MaxMessageLen {
			continue
		}
		if len(out) > 0 {
			if _, err := pc.c.Write(out); err != nil {
				return
			}
			out = out[:0]
		}
	}
}

// reply appends the answer to m, if any, to out.
func (s *pac) reply(pc *pacConn, m []byte, out []byte) []byte {
	switch msgType(m) {
	case alg.TypeStartControlConnectionRequest:
		return (&alg.StartControlConnectionReply{
			ProtocolVersion: protocolVersion, ResultCode: resultOK,
			FramingCapabilities: framingAsync, BearerCapabilities: bearerAnalog, FirmwareRevision: 1,
		}).Append(out)
	case alg.TypeEchoRequest:
		return (&alg.EchoReply{Identifier: binary.BigEndian.Uint32(m[12:]), ResultCode: resultOK}).Append(out)
	case alg.TypeStopControlConnectionRequest:
		return (&alg.StopControlConnectionReply{ResultCode: resultOK}).Append(out)
	case alg.TypeOutgoingCallRequest:
		peerID := get16(m, 12)
		sid, ok := s.newCall(pc, peerID)
		if !ok {
			return (&alg.OutgoingCallReply{PeerCallID: peerID, ResultCode: alg.OutgoingCallResultGeneralError,
				ErrorCode: alg.ErrorCodeNoResource}).Append(out)
		}
		return (&alg.OutgoingCallReply{CallID: sid, PeerCallID: peerID, ResultCode: alg.OutgoingCallResultConnected,
			ConnectSpeed: 64000, PacketRecvWindow: 64}).Append(out)
	case alg.TypeCallClearRequest:
		peerID := get16(m, 12)
		s.mu.Lock()
		sid, ok := pc.byID[peerID]
		if ok {
			delete(pc.byID, peerID)
			delete(s.calls, sid)
		}
		s.mu.Unlock()
		if !ok {
			return out
		}
		// The peer's ID, as the kernel helper reads this field: with the
		// server's own ID (RFC 2637) a router must guess which call is
		// meant, and the guess is not what is measured here.
		return (&alg.CallDisconnectNotify{CallID: peerID, ResultCode: cdnRequest}).Append(out)
	}
	return out
}

func (s *pac) newCall(pc *pacConn, peerID uint16) (uint16, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := pc.byID[peerID]; dup {
		return 0, false
	}
	for range serverIDs {
		id := s.next
		s.next++
		if s.next < firstServerID {
			s.next = firstServerID
		}
		if _, used := s.calls[id]; !used {
			s.calls[id] = &pacCall{Peer: pc.peer, PeerID: peerID, conn: pc}
			pc.byID[peerID] = id
			return id, true
		}
	}
	return 0, false
}

// pns is one control connection of the client side.
type pns struct {
	c   net.Conn
	r   *msgReader
	out []byte
}

// ioTimeout bounds every exchange, so a lost reply fails the run instead of
// hanging it.
const ioTimeout = 20 * time.Second

// startPNS opens the control connection on c (already connected).
func startPNS(c net.Conn) (*pns, error) {
	p := &pns{c: c, r: newMsgReader(c), out: make([]byte, 0, 16<<10)}
	p.out = (&alg.StartControlConnectionRequest{
		ProtocolVersion: protocolVersion, FramingCapabilities: framingAsync,
		BearerCapabilities: bearerAnalog, FirmwareRevision: 1,
	}).Append(p.out[:0])
	if err := p.flush(); err != nil {
		return nil, err
	}
	m, err := p.read()
	if err != nil {
		return nil, err
	}
	if msgType(m) != alg.TypeStartControlConnectionReply || m[14] != resultOK {
		return nil, fmt.Errorf("start-control-connection: got %v result %d", msgType(m), m[14])
	}
	return p, nil
}

func (p *pns) Close() error { return p.c.Close() }

func (p *pns) flush() error {
	p.c.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := p.c.Write(p.out)
	p.out = p.out[:0]
	return err
}

func (p *pns) read() ([]byte, error) {
	p.c.SetReadDeadline(time.Now().Add(ioTimeout))
	return p.r.next()
}

// open places calls with the client call IDs ids, window requests per
// write, and returns the server call ID of each.
func (p *pns) open(ids []uint16, window int) ([]uint16, error) {
	sids := make([]uint16, len(ids))
	index := make(map[uint16]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	for lo := 0; lo < len(ids); lo += window {
		hi := min(lo+window, len(ids))
		for _, id := range ids[lo:hi] {
			p.out = (&alg.OutgoingCallRequest{CallID: id, CallSerialNumber: id, MinBPS: 300, MaxBPS: 100000000,
				BearerType: bearerAnalog, FramingType: framingAsync, PacketRecvWindow: 64}).Append(p.out)
		}
		if err := p.flush(); err != nil {
			return nil, err
		}
		for got := lo; got < hi; {
			m, err := p.read()
			if err != nil {
				return nil, fmt.Errorf("outgoing-call-reply %d of %d: %w", got+1, len(ids), err)
			}
			if msgType(m) != alg.TypeOutgoingCallReply {
				continue
			}
			i, ok := index[get16(m, 14)]
			if !ok {
				return nil, fmt.Errorf("outgoing-call-reply for unknown call %d", get16(m, 14))
			}
			if m[16] != alg.OutgoingCallResultConnected {
				return nil, fmt.Errorf("call %d refused: result %d error %d", ids[i], m[16], m[17])
			}
			sids[i] = get16(m, 12)
			got++
		}
	}
	return sids, nil
}

// clear clears the calls ids, window requests per write, and waits for
// every Call-Disconnect-Notify.
func (p *pns) clear(ids []uint16, window int) error {
	for lo := 0; lo < len(ids); lo += window {
		hi := min(lo+window, len(ids))
		for _, id := range ids[lo:hi] {
			p.out = (&alg.CallClearRequest{CallID: id}).Append(p.out)
		}
		if err := p.flush(); err != nil {
			return err
		}
		for got := lo; got < hi; {
			m, err := p.read()
			if err != nil {
				return fmt.Errorf("call-disconnect-notify %d of %d: %w", got+1, len(ids), err)
			}
			if msgType(m) == alg.TypeCallDisconnectNotify {
				got++
			}
		}
	}
	return nil
}

// callLatency places one call and clears it, and returns the time from
// writing the Outgoing-Call-Request to reading its reply.
func (p *pns) callLatency(id uint16) (time.Duration, error) {
	p.out = (&alg.OutgoingCallRequest{CallID: id, CallSerialNumber: id, MinBPS: 300, MaxBPS: 100000000,
		BearerType: bearerAnalog, FramingType: framingAsync, PacketRecvWindow: 64}).Append(p.out[:0])
	p.c.SetDeadline(time.Now().Add(ioTimeout))
	start := time.Now()
	if _, err := p.c.Write(p.out); err != nil {
		return 0, err
	}
	p.out = p.out[:0]
	for {
		m, err := p.r.next()
		if err != nil {
			return 0, err
		}
		if msgType(m) != alg.TypeOutgoingCallReply {
			continue
		}
		d := time.Since(start)
		if m[16] != alg.OutgoingCallResultConnected {
			return 0, fmt.Errorf("call %d refused: result %d", id, m[16])
		}
		return d, p.clear([]uint16{id}, 1)
	}
}
