package alg

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// DataPlane installs the kernel state that carries one call's GRE. The
// inbound half is keyed by what the server puts on the wire (its address
// and the NAT call ID); the outbound half by what the client does.
type DataPlane interface {
	AddInbound(server netip.Addr, natID uint16, client netip.Addr, clientID uint16) error
	DeleteInbound(server netip.Addr, natID uint16) error
	AddOutbound(client, server netip.Addr, serverID uint16) error
	DeleteOutbound(client, server netip.Addr, serverID uint16) error
}

// Addition is one half of a call's mapping, as AddInbound (Outbound false:
// Server, NATID, Client, ClientID) or AddOutbound (Outbound true: Client,
// Server, ServerID) adds it.
type Addition struct {
	Outbound        bool
	Server, Client  netip.Addr
	NATID, ClientID uint16
	ServerID        uint16
}

// A DataPlane that is also a MultiAdder makes several additions at once,
// as one kernel transaction; the relay then makes those of one read's
// messages together. errs[i] is adds[i]'s error.
type MultiAdder interface {
	AddMany(adds []Addition) (errs []error)
}

// Limits bound what one LAN host, and all of them together, can hold.
type Limits struct {
	ConnsPerClient int // control connections per LAN host
	CallsPerClient int // calls per LAN host
	Calls          int // calls in all
}

// DefaultLimits are the daemon's defaults.
var DefaultLimits = Limits{ConnsPerClient: 16, CallsPerClient: 64, Calls: 16384}

// Errors a caller branches on.
var (
	ErrTooManyConns = errors.New("too many control connections from this client")
	ErrTooManyCalls = errors.New("too many calls")
	ErrNoCallIDs    = errors.New("no free call ID toward this server")
)

// CallInfo is a snapshot of one call, for the operator and the idle check.
type CallInfo struct {
	Client       netip.Addr
	ClientCallID uint16
	Server       netip.Addr
	ServerCallID uint16 // 0 until the server has answered
	NATCallID    uint16
	Since        time.Time
	Established  bool // the server accepted the call; GRE flows both ways
}

// call is one PPTP call through the router.
type call struct {
	CallInfo
	session    *Session
	clearAt    time.Time // set by a Call-Clear-Request; released then if no Call-Disconnect-Notify came
	lastActive time.Time
	lastSeen   Traffic
	// A call's additions to the data plane run without the table's lock,
	// so that calls set up at the same moment share the kernel's batches.
	// Meanwhile adding or establishing is set; a release then leaves that
	// half, and the NAT call ID or outbound key that names it, for the
	// adding goroutine to take back, so that nothing new can take the key
	// before its element is gone.
	adding, establishing, released bool
}

type natKey struct {
	server netip.Addr
	natID  uint16
}

// outboundKey is what an established call's outbound half is keyed by.
type outboundKey struct {
	client, server netip.Addr
	serverID       uint16
}

// Table owns every call through the router: the call-ID spaces toward each
// server, the per-client counts that enforce Limits, and the data-plane
// entries behind each call. Sessions call into it under its mutex.
type Table struct {
	dp     DataPlane
	log    *slog.Logger
	limits Limits
	now    func() time.Time

	mu          sync.Mutex
	ids         map[netip.Addr]*callIDSpace // by server
	calls       map[natKey]*call
	outbound    map[outboundKey]*call // established calls, by their outbound half
	clientCalls map[netip.Addr]int
	clientConns map[netip.Addr]int
	sessions    int
}

// NewTable returns an empty table. A nil logger discards.
func NewTable(dp DataPlane, limits Limits, log *slog.Logger) *Table {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Table{
		dp:          dp,
		log:         log,
		limits:      limits,
		now:         time.Now,
		ids:         make(map[netip.Addr]*callIDSpace),
		calls:       make(map[natKey]*call),
		outbound:    make(map[outboundKey]*call),
		clientCalls: make(map[netip.Addr]int),
		clientConns: make(map[netip.Addr]int),
	}
}

// Session is the call state of one relayed control connection.
type Session struct {
	t        *Table
	Client   netip.Addr
	Server   netip.Addr
	calls    []*call  // this connection's calls
	offered  []uint16 // server call IDs of Incoming-Call-Requests not yet answered
	refusals int      // calls refused on this connection
	closed   bool
}

// OpenSession admits a new control connection from client to server.
func (t *Table) OpenSession(client, server netip.Addr) (*Session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.limits.ConnsPerClient > 0 && t.clientConns[client] >= t.limits.ConnsPerClient {
		return nil, fmt.Errorf("%w (%d)", ErrTooManyConns, t.limits.ConnsPerClient)
	}
	t.clientConns[client]++
	t.sessions++
	return &Session{t: t, Client: client, Server: server}, nil
}

// Close releases every call of the session.
func (s *Session) Close() {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.refusals > loggedRefusals {
		t.log.Warn("calls refused on this connection", "client", s.Client, "server", s.Server, "refused", s.refusals)
	}
	for len(s.calls) > 0 {
		t.releaseLocked(s.calls[len(s.calls)-1], "control connection closed")
	}
	if t.clientConns[s.Client]--; t.clientConns[s.Client] <= 0 {
		delete(t.clientConns, s.Client)
	}
	t.sessions--
}

// startCall reserves a NAT call ID for a call the client opens and installs
// its inbound half.
func (s *Session) startCall(clientID uint16) (*call, error) {
	c, err := s.reserveCall(clientID)
	if err != nil {
		return nil, err
	}
	if err := s.addInbound(c); err != nil {
		return nil, err
	}
	return c, nil
}

// reserveCall takes a NAT call ID for a call the client opens; addInbound
// must follow.
func (s *Session) reserveCall(clientID uint16) (*call, error) {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.closed {
		return nil, errors.New("session closed")
	}
	if s.findLocked(func(c *call) bool { return c.ClientCallID == clientID }) != nil {
		return nil, fmt.Errorf("call ID %d is already in use on this connection", clientID)
	}
	if t.limits.CallsPerClient > 0 && t.clientCalls[s.Client] >= t.limits.CallsPerClient {
		return nil, fmt.Errorf("%w: %d per client", ErrTooManyCalls, t.limits.CallsPerClient)
	}
	if t.limits.Calls > 0 && len(t.calls) >= t.limits.Calls {
		return nil, fmt.Errorf("%w: %d in all", ErrTooManyCalls, t.limits.Calls)
	}
	space := t.ids[s.Server]
	if space == nil {
		space = new(callIDSpace)
		t.ids[s.Server] = space
	}
	natID, ok := space.take(clientID)
	if !ok {
		return nil, ErrNoCallIDs
	}
	now := t.now()
	c := &call{
		CallInfo: CallInfo{
			Client: s.Client, ClientCallID: clientID,
			Server: s.Server, NATCallID: natID, Since: now,
		},
		session:    s,
		lastActive: now,
		adding:     true,
	}
	t.calls[natKey{s.Server, natID}] = c
	t.clientCalls[s.Client]++
	s.calls = append(s.calls, c)
	return c, nil
}

// addInbound installs a reserved call's inbound half, before the request
// goes on: the server may send GRE right after its reply, before the relay
// has forwarded that reply. On an error the call is gone.
func (s *Session) addInbound(c *call) error {
	return s.inboundAdded(c, s.t.dp.AddInbound(s.Server, c.NATCallID, s.Client, c.ClientCallID))
}

// inboundAdded finishes addInbound once the data plane answered err.
func (s *Session) inboundAdded(c *call, err error) error {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	c.adding = false
	switch {
	case c.released:
		// Released meanwhile (the session closed): take the half back.
		t.deleteInboundLocked(c)
		t.freeIDLocked(c.Server, c.NATCallID)
		if err == nil {
			err = errors.New("call released while it was set up")
		}
		return err
	case err != nil:
		t.deleteInboundLocked(c) // a reinstall meanwhile may have added it
		t.releaseLocked(c, "")
		return err
	}
	return nil
}

// establish records the server's call ID and opens the outbound half.
func (s *Session) establish(c *call, serverID uint16) error {
	key, ok, err := s.reserveOutbound(c, serverID)
	if !ok {
		return err
	}
	return s.addOutbound(c, key)
}

// reserveOutbound records the server's call ID and takes the outbound key;
// addOutbound must follow if ok. A call released since the caller found it
// (an expiry, the session's close) is left alone (not ok, no error):
// nothing would delete its outbound half.
func (s *Session) reserveOutbound(c *call, serverID uint16) (key outboundKey, ok bool, err error) {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.closed || c.Established || c.released {
		return key, false, nil
	}
	key = outboundKey{s.Client, s.Server, serverID}
	if other := t.outbound[key]; other != nil {
		// The outbound half is keyed without the call: two calls cannot
		// share it, and releasing one would cut the other's GRE.
		return key, false, fmt.Errorf("server call ID %d is already in use by this client's call %d", serverID, other.ClientCallID)
	}
	c.ServerCallID = serverID
	c.Established = true
	c.establishing = true
	t.outbound[key] = c
	return key, true, nil
}

// addOutbound installs the outbound half that reserveOutbound keyed.
func (s *Session) addOutbound(c *call, key outboundKey) error {
	return s.outboundAdded(c, key, s.t.dp.AddOutbound(s.Client, s.Server, key.serverID))
}

// outboundAdded finishes addOutbound once the data plane answered err.
func (s *Session) outboundAdded(c *call, key outboundKey, err error) error {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	c.establishing = false
	switch {
	case c.released:
		t.deleteOutboundLocked(c)
		delete(t.outbound, key)
		return nil
	case err != nil:
		t.deleteOutboundLocked(c) // a reinstall meanwhile may have added it
		delete(t.outbound, key)
		c.ServerCallID, c.Established = 0, false
		return err
	}
	c.lastActive = t.now()
	return nil
}

func (s *Session) release(c *call, why string) {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	s.t.releaseLocked(c, why)
}

func (s *Session) find(match func(*call) bool) *call {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	return s.findLocked(match)
}

func (s *Session) findLocked(match func(*call) bool) *call {
	for _, c := range s.calls {
		if match(c) {
			return c
		}
	}
	return nil
}

// markClearing gives a call whose clear was requested a deadline: the
// server's Call-Disconnect-Notify normally releases it first.
func (s *Session) markClearing(c *call, grace time.Duration) {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if c.clearAt.IsZero() {
		c.clearAt = s.t.now().Add(grace)
	}
}

func (s *Session) offer(serverID uint16) {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if len(s.offered) < 64 {
		s.offered = append(s.offered, serverID)
	}
}

// takeOffer removes serverID from the unanswered incoming calls.
func (s *Session) takeOffer(serverID uint16) bool {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	for i, id := range s.offered {
		if id == serverID {
			s.offered = append(s.offered[:i], s.offered[i+1:]...)
			return true
		}
	}
	return false
}

// releaseLocked takes the call out of the table and its halves out of the
// data plane, and logs why; an empty why logs nothing (a call that never
// got going).
func (t *Table) releaseLocked(c *call, why string) {
	k := natKey{c.Server, c.NATCallID}
	if t.calls[k] != c {
		return
	}
	delete(t.calls, k)
	c.released = true
	if !c.adding {
		t.deleteInboundLocked(c)
		t.freeIDLocked(c.Server, c.NATCallID)
	}
	if c.Established && !c.establishing {
		delete(t.outbound, outboundKey{c.Client, c.Server, c.ServerCallID})
		t.deleteOutboundLocked(c)
	}
	if t.clientCalls[c.Client]--; t.clientCalls[c.Client] <= 0 {
		delete(t.clientCalls, c.Client)
	}
	s := c.session
	for i, sc := range s.calls {
		if sc == c {
			s.calls = append(s.calls[:i], s.calls[i+1:]...)
			break
		}
	}
	if why != "" {
		t.log.Info("call released", "client", c.Client, "client_call_id", c.ClientCallID,
			"server", c.Server, "server_call_id", c.ServerCallID, "nat_call_id", c.NATCallID, "reason", why)
	}
}

func (t *Table) deleteInboundLocked(c *call) {
	if err := t.dp.DeleteInbound(c.Server, c.NATCallID); err != nil {
		t.log.Warn("delete inbound GRE mapping", "server", c.Server, "nat_call_id", c.NATCallID, "err", err)
	}
}

func (t *Table) deleteOutboundLocked(c *call) {
	if err := t.dp.DeleteOutbound(c.Client, c.Server, c.ServerCallID); err != nil {
		t.log.Warn("delete outbound GRE mapping", "client", c.Client, "server", c.Server, "server_call_id", c.ServerCallID, "err", err)
	}
}

func (t *Table) freeIDLocked(server netip.Addr, id uint16) {
	space := t.ids[server]
	if space == nil {
		return
	}
	space.release(id)
	if space.n == 0 {
		delete(t.ids, server)
	}
}

// Calls returns every call, oldest first.
func (t *Table) Calls() []CallInfo {
	t.mu.Lock()
	out := make([]CallInfo, 0, len(t.calls))
	for _, c := range t.calls {
		out = append(out, c.CallInfo)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].NATCallID < out[j].NATCallID
	})
	return out
}

// SessionOf returns the session holding the call that the server knows
// by natID, and that call; nil if there is none.
func (t *Table) SessionOf(server netip.Addr, natID uint16) (*Session, CallInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.calls[natKey{server, natID}]; c != nil {
		return c.session, c.CallInfo
	}
	return nil, CallInfo{}
}

// Len reports the number of calls.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.calls)
}

// Sessions reports the number of open control connections.
func (t *Table) Sessions() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sessions
}

// Traffic is one call's GRE counters.
type Traffic struct {
	PacketsIn, BytesIn, PacketsOut, BytesOut uint64
}

// Expire releases calls whose GRE has not moved for idle, and calls whose
// clear was requested and never confirmed. traffic reports a call's
// counters. It returns how many calls it released.
func (t *Table) Expire(idle time.Duration, traffic func(CallInfo) Traffic) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var stale []*call
	for _, c := range t.calls {
		if !c.clearAt.IsZero() && now.After(c.clearAt) {
			stale = append(stale, c)
			continue
		}
		if tr := traffic(c.CallInfo); tr != c.lastSeen {
			c.lastSeen = tr
			c.lastActive = now
			continue
		}
		if idle > 0 && now.Sub(c.lastActive) > idle {
			stale = append(stale, c)
		}
	}
	for _, c := range stale {
		why := "GRE idle"
		if !c.clearAt.IsZero() {
			why = "cleared"
		}
		t.releaseLocked(c, why)
	}
	return len(stale)
}

// Reinstall writes every call's data-plane entries again, after the kernel
// state was lost (a flushed ruleset, a firewall reload): in batches of
// reinstallBatch additions if the data plane makes several at once.
func (t *Table) Reinstall() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	adds := make([]Addition, 0, len(t.calls))
	for _, c := range t.calls {
		adds = append(adds, Addition{Server: c.Server, NATID: c.NATCallID, Client: c.Client, ClientID: c.ClientCallID})
		if c.Established {
			adds = append(adds, Addition{Outbound: true, Client: c.Client, Server: c.Server, ServerID: c.ServerCallID})
		}
	}
	var errs []error
	for len(adds) > 0 {
		n := min(len(adds), reinstallBatch)
		for _, err := range addMany(t.dp, adds[:n]) {
			if err != nil {
				errs = append(errs, err)
			}
		}
		adds = adds[n:]
	}
	return errors.Join(errs...)
}

// reinstallBatch bounds one batch of Reinstall: the kernel takes a batch in
// one message buffer, and 10,000 calls' worth would not fit.
const reinstallBatch = 256

// addMany makes adds, as one kernel transaction if dp can, else one after
// another, and returns each one's error.
func addMany(dp DataPlane, adds []Addition) []error {
	if m, ok := dp.(MultiAdder); ok {
		return m.AddMany(adds)
	}
	errs := make([]error, len(adds))
	for i, a := range adds {
		if a.Outbound {
			errs[i] = dp.AddOutbound(a.Client, a.Server, a.ServerID)
		} else {
			errs[i] = dp.AddInbound(a.Server, a.NATID, a.Client, a.ClientID)
		}
	}
	return errs
}
