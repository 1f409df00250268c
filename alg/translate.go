package alg

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Only the client's call-ID space is translated: the server's IDs are
// unique at the server and pass through unchanged. So, client to server,
// the fields that carry the sender's own ID go C -> N; server to client,
// the fields that carry the receiver's ID go N -> C.

// clearGrace is how long a call whose clear was requested keeps its
// translation while the server's Call-Disconnect-Notify is on its way.
const clearGrace = time.Second

// A message may have to wait for the data plane before it goes on: an
// Outgoing-Call-Request for its call's inbound half, the server's reply for
// the outbound half. The relay translates the messages of one read in
// order, then makes their additions together (translate), so that calls set
// up at once share kernel batches instead of waiting for one each in turn.

// waiting is a message's data-plane addition, made after the read's
// messages were translated.
type waiting struct {
	c        *call
	outbound bool
	key      outboundKey // outbound
	err      error       // the addition's, once made
}

// addition is what w asks the data plane for.
func (w *waiting) addition(s *Session) Addition {
	if w.outbound {
		return Addition{Outbound: true, Client: s.Client, Server: s.Server, ServerID: w.key.serverID}
	}
	return Addition{Server: s.Server, NATID: w.c.NATCallID, Client: s.Client, ClientID: w.c.ClientCallID}
}

// added finishes w once the data plane answered err.
func (w *waiting) added(s *Session, err error) {
	if w.outbound {
		w.err = s.outboundAdded(w.c, w.key, err)
	} else {
		w.err = s.inboundAdded(w.c, err)
	}
}

// addAll makes the additions of ws: as one kernel transaction if the data
// plane can, else one after another.
func (s *Session) addAll(ws ...*waiting) {
	adds := make([]Addition, len(ws))
	for i, w := range ws {
		adds[i] = w.addition(s)
	}
	for i, err := range addMany(s.t.dp, adds) {
		ws[i].added(s, err)
	}
}

// readMsg is one whole message of a read, at buf[start:end] in the relay's
// buffer.
type readMsg struct {
	start, end int
	forward    bool // false: swallowed
	wait       *waiting
}

// translate translates in place the messages of one read from the client
// or the server, and makes their data-plane additions, all at once (one
// kernel batch with a MultiAdder). reply
// writes to the client what it gets instead of a message it sent (a
// refusal). An error ends the connection; the additions of the messages
// before it are made all the same, so that every call in the table is whole
// when the connection's close releases them.
func (s *Session) translate(buf []byte, msgs []readMsg, fromClient bool, reply func([]byte) error) error {
	var err error
	var ws []*waiting
	for i := 0; i < len(msgs) && err == nil; i++ {
		m := &msgs[i]
		if fromClient {
			var r []byte
			m.forward, r, m.wait, err = s.clientMessage(buf[m.start:m.end])
			if err == nil && r != nil {
				err = reply(r)
			}
		} else {
			m.forward = true
			m.wait, err = s.serverMessage(buf[m.start:m.end])
		}
		if m.wait != nil {
			ws = append(ws, m.wait)
		}
	}
	if ws == nil {
		return err
	}
	s.addAll(ws...)
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.wait == nil:
		case !fromClient:
			if aerr := s.serverAdded(m.wait); err == nil {
				err = aerr
			}
		default:
			var r []byte
			if m.forward, r = s.clientAdded(m.wait); r != nil && err == nil {
				err = reply(r)
			}
		}
	}
	return err
}

// fromClient translates one whole message from the client in place. If
// forward is false the message is swallowed and reply, when not nil, goes
// back to the client instead.
func (s *Session) fromClient(m []byte) (forward bool, reply []byte, err error) {
	forward, reply, w, err := s.clientMessage(m)
	if w != nil {
		s.addAll(w)
		forward, reply = s.clientAdded(w)
	}
	return forward, reply, err
}

// clientAdded finishes a request whose call's inbound half w added: if
// that failed, the request goes no further and the client is refused.
func (s *Session) clientAdded(w *waiting) (forward bool, reply []byte) {
	c := w.c
	if w.err != nil {
		s.refused(c.ClientCallID, w.err)
		return false, refusal(c.ClientCallID)
	}
	s.t.log.Info("outgoing call", "client", s.Client, "client_call_id", c.ClientCallID, "server", s.Server, "nat_call_id", c.NATCallID)
	return true, nil
}

// clientMessage is fromClient up to the data-plane addition, if one is due.
func (s *Session) clientMessage(m []byte) (forward bool, reply []byte, wait *waiting, err error) {
	t := MessageType(binary.BigEndian.Uint16(m[8:]))
	switch t {
	case TypeOutgoingCallReply, TypeIncomingCallRequest, TypeIncomingCallConnected, TypeWANErrorNotify:
		// Only a PAC sends these (RFC 2637 section 2). From the client they
		// are an attack or a broken peer; the server must not get them.
		return false, nil, nil, fmt.Errorf("from client: %v, which only a server sends", t)

	case TypeOutgoingCallRequest:
		clientID := get16(m, t.CallIDOffset())
		c, err := s.reserveCall(clientID)
		if err != nil {
			s.refused(clientID, err)
			return false, refusal(clientID), nil, nil
		}
		put16(m, t.CallIDOffset(), c.NATCallID)
		return true, nil, &waiting{c: c}, nil

	case TypeIncomingCallReply:
		clientID := get16(m, t.CallIDOffset())
		serverID := get16(m, t.PeerCallIDOffset())
		if !s.takeOffer(serverID) {
			return false, nil, nil, fmt.Errorf("from client: %v for server call %d, which the server never offered", t, serverID)
		}
		if m[incomingCallReplyResultOffset] != incomingCallResultAccept {
			return true, nil, nil, nil
		}
		c, err := s.startCall(clientID)
		if err != nil {
			// The server has already offered the call; tell it no.
			s.refused(clientID, err)
			m[incomingCallReplyResultOffset] = incomingCallResultDoNotAccept
			return true, nil, nil, nil
		}
		put16(m, t.CallIDOffset(), c.NATCallID)
		if err := s.establish(c, serverID); err != nil {
			s.release(c, "data plane: "+err.Error())
			return false, nil, nil, err
		}

	case TypeCallClearRequest, TypeCallDisconnectNotify:
		clientID := get16(m, t.CallIDOffset())
		c := s.find(func(c *call) bool { return c.ClientCallID == clientID })
		if c == nil {
			return true, nil, nil, nil
		}
		put16(m, t.CallIDOffset(), c.NATCallID)
		if t == TypeCallDisconnectNotify {
			s.release(c, "disconnected by client")
		} else {
			s.markClearing(c, clearGrace)
		}
	}
	return true, nil, nil, nil
}

// fromServer translates one whole message from the server in place.
func (s *Session) fromServer(m []byte) error {
	w, err := s.serverMessage(m)
	if w != nil {
		s.addAll(w)
		err = s.serverAdded(w)
	}
	return err
}

// serverAdded finishes a reply whose call's outbound half w added: if
// that failed, the call is released and the connection ends.
func (s *Session) serverAdded(w *waiting) error {
	if w.err != nil {
		s.release(w.c, "data plane: "+w.err.Error())
		return w.err
	}
	return nil
}

// serverMessage is fromServer up to the data-plane addition, if one is due.
func (s *Session) serverMessage(m []byte) (*waiting, error) {
	t := MessageType(binary.BigEndian.Uint16(m[8:]))
	switch t {
	case TypeOutgoingCallReply:
		natID := get16(m, t.PeerCallIDOffset())
		c := s.find(func(c *call) bool { return c.NATCallID == natID && !c.Established })
		if c == nil {
			return nil, nil
		}
		put16(m, t.PeerCallIDOffset(), c.ClientCallID)
		if m[outgoingCallReplyResultOffset] != OutgoingCallResultConnected {
			s.release(c, fmt.Sprintf("server refused (result %d)", m[outgoingCallReplyResultOffset]))
			return nil, nil
		}
		key, ok, err := s.reserveOutbound(c, get16(m, t.CallIDOffset()))
		if err != nil {
			s.release(c, "data plane: "+err.Error())
			return nil, err
		}
		if ok {
			return &waiting{c: c, outbound: true, key: key}, nil
		}

	case TypeIncomingCallRequest:
		s.offer(get16(m, t.CallIDOffset()))

	case TypeIncomingCallConnected, TypeWANErrorNotify, TypeSetLinkInfo:
		off := t.PeerCallIDOffset()
		natID := get16(m, off)
		if c := s.find(func(c *call) bool { return c.NATCallID == natID }); c != nil {
			put16(m, off, c.ClientCallID)
		}

	case TypeCallDisconnectNotify:
		// RFC 2637 puts the server's own ID here; the kernel helper, and the
		// servers it was written against, put the client's. Take either.
		id := get16(m, t.CallIDOffset())
		if c := s.find(func(c *call) bool { return c.NATCallID == id }); c != nil {
			put16(m, t.CallIDOffset(), c.ClientCallID)
			s.release(c, "disconnected by server")
		} else if c := s.find(func(c *call) bool { return c.Established && c.ServerCallID == id }); c != nil {
			s.release(c, "disconnected by server")
		}
	}
	return nil, nil
}

// loggedRefusals is how many refused calls a connection logs one by one; a
// client asking on and on past its limits would otherwise flood the log.
// Session.Close logs the total.
const loggedRefusals = 8

// refused logs a call the router turned down.
func (s *Session) refused(clientID uint16, err error) {
	s.t.mu.Lock()
	s.refusals++
	n := s.refusals
	s.t.mu.Unlock()
	switch {
	case n <= loggedRefusals:
		s.t.log.Warn("call refused", "client", s.Client, "server", s.Server, "client_call_id", clientID, "err", err)
	case n == loggedRefusals+1:
		s.t.log.Warn("call refused; logging no more for this connection", "client", s.Client, "server", s.Server,
			"client_call_id", clientID, "err", err)
	}
}

// Result fields the translation reads.
const (
	outgoingCallReplyResultOffset = 16
	incomingCallReplyResultOffset = 16
	incomingCallResultAccept      = 1
	incomingCallResultDoNotAccept = 3
)

// refusal is the Outgoing-Call-Reply that turns down a call the router
// cannot carry.
func refusal(clientID uint16) []byte {
	return (&OutgoingCallReply{
		PeerCallID: clientID,
		ResultCode: OutgoingCallResultGeneralError,
		ErrorCode:  ErrorCodeNoResource,
	}).Append(nil)
}

func get16(m []byte, off int) uint16    { return binary.BigEndian.Uint16(m[off:]) }
func put16(m []byte, off int, v uint16) { binary.BigEndian.PutUint16(m[off:], v) }
