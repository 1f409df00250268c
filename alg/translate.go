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

// fromClient translates one whole message from the client in place. If
// forward is false the message is swallowed and reply, when not nil, goes
// back to the client instead.
func (s *Session) fromClient(m []byte) (forward bool, reply []byte, err error) {
	t := MessageType(binary.BigEndian.Uint16(m[8:]))
	switch t {
	case TypeOutgoingCallReply, TypeIncomingCallRequest, TypeIncomingCallConnected, TypeWANErrorNotify:
		// Only a PAC sends these (RFC 2637 section 2). From the client they
		// are an attack or a broken peer; the server must not get them.
		return false, nil, fmt.Errorf("from client: %v, which only a server sends", t)

	case TypeOutgoingCallRequest:
		clientID := get16(m, t.CallIDOffset())
		c, err := s.startCall(clientID)
		if err != nil {
			s.refused(clientID, err)
			return false, refusal(clientID), nil
		}
		put16(m, t.CallIDOffset(), c.NATCallID)
		s.t.log.Info("outgoing call", "client", s.Client, "client_call_id", clientID, "server", s.Server, "nat_call_id", c.NATCallID)

	case TypeIncomingCallReply:
		clientID := get16(m, t.CallIDOffset())
		serverID := get16(m, t.PeerCallIDOffset())
		if !s.takeOffer(serverID) {
			return false, nil, fmt.Errorf("from client: %v for server call %d, which the server never offered", t, serverID)
		}
		if m[incomingCallReplyResultOffset] != incomingCallResultAccept {
			return true, nil, nil
		}
		c, err := s.startCall(clientID)
		if err != nil {
			// The server has already offered the call; tell it no.
			s.refused(clientID, err)
			m[incomingCallReplyResultOffset] = incomingCallResultDoNotAccept
			return true, nil, nil
		}
		put16(m, t.CallIDOffset(), c.NATCallID)
		if err := s.establish(c, serverID); err != nil {
			s.release(c, "data plane: "+err.Error())
			return false, nil, err
		}

	case TypeCallClearRequest, TypeCallDisconnectNotify:
		clientID := get16(m, t.CallIDOffset())
		c := s.find(func(c *call) bool { return c.ClientCallID == clientID })
		if c == nil {
			return true, nil, nil
		}
		put16(m, t.CallIDOffset(), c.NATCallID)
		if t == TypeCallDisconnectNotify {
			s.release(c, "disconnected by client")
		} else {
			s.markClearing(c, clearGrace)
		}
	}
	return true, nil, nil
}

// fromServer translates one whole message from the server in place.
func (s *Session) fromServer(m []byte) error {
	t := MessageType(binary.BigEndian.Uint16(m[8:]))
	switch t {
	case TypeOutgoingCallReply:
		natID := get16(m, t.PeerCallIDOffset())
		c := s.find(func(c *call) bool { return c.NATCallID == natID && !c.Established })
		if c == nil {
			return nil
		}
		put16(m, t.PeerCallIDOffset(), c.ClientCallID)
		if m[outgoingCallReplyResultOffset] != OutgoingCallResultConnected {
			s.release(c, fmt.Sprintf("server refused (result %d)", m[outgoingCallReplyResultOffset]))
			return nil
		}
		serverID := get16(m, t.CallIDOffset())
		if err := s.establish(c, serverID); err != nil {
			s.release(c, "data plane: "+err.Error())
			return err
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
	return nil
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
