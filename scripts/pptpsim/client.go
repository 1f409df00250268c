package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
)

// thenAction is what the client does with its calls once the pings are done.
type thenAction string

const (
	thenClear thenAction = "clear" // Call-Clear-Request each call, then Stop-Control-Connection-Request
	thenClose thenAction = "close" // close the connection with a FIN
	thenReset thenAction = "reset" // close the connection with a RST
	thenHold  thenAction = "hold"  // keep everything up until stdin closes or a signal
)

func parseThen(s string) (thenAction, error) {
	switch a := thenAction(s); a {
	case thenClear, thenClose, thenReset, thenHold:
		return a, nil
	}
	return "", fmt.Errorf("--then %q: want clear, close, reset or hold", s)
}

// replyTimeout bounds each wait for an answer the server gives at once.
const replyTimeout = 5 * time.Second

// errFailed is returned when the client ran to the end but some call or
// ping failed; the JSON lines say which.
var errFailed = errors.New("some calls or pings failed")

type clientConfig struct {
	server  string // host:port
	local   net.IP // nil: the kernel chooses
	callIDs []uint16
	segment segmentMode
	pings   int
	then    thenAction
	sli     bool
	wait    time.Duration
}

// client is a PNS that opens several calls on one control connection.
type client struct {
	cfg    clientConfig
	log    *slog.Logger
	out    *emitter
	conn   *net.TCPConn
	w      *controlWriter
	gre    *greConn
	server net.IP
	calls  []*clientCall

	in      chan alg.Message // what the control reader does not handle itself
	readErr error            // why in was closed
	quit    chan struct{}    // closed when the client ends

	mu    sync.Mutex
	slis  []uint16   // Peer Call ID of each Set-Link-Info, in arrival order
	early []earlyGRE // GRE packets the server sent unasked
	round *pingRound // the ping round under way, if any
	stray int        // GRE packets matching nothing
}

type clientCall struct {
	C          uint16 // the client's call ID
	replied    bool
	S          uint16 // the server's call ID, from the reply
	peerCallID uint16 // the reply's Peer Call ID; should be C
	result     uint8
	replyOrder int    // the n-th reply; the server's n-th Set-Link-Info is for it
	seq        uint32 // next GRE sequence number
}

func (c *clientCall) connected() bool {
	return c.replied && c.result == alg.OutgoingCallResultConnected
}

type earlyGRE struct {
	callID, server uint16
}

// pingRound is one batch of GRE pings, K per call.
type pingRound struct {
	n       int
	pending map[string]int // payload not yet echoed, to call index
	sent    []int
	echoed  []int
	wrongID []int         // echoes of the call's payload that carried another call ID
	done    chan struct{} // closed once nothing is pending
	closed  bool
}

// settle closes done if nothing is pending any more. The caller holds c.mu.
func (r *pingRound) settle() {
	if len(r.pending) == 0 && !r.closed {
		r.closed = true
		close(r.done)
	}
}

// runClient runs the client. An error other than errFailed (no connection,
// no Start-Control-Connection-Reply) is also printed as an "error" line,
// so that the tests always have a line to read.
func runClient(ctx context.Context, cfg clientConfig, stdin io.Reader, out *emitter, log *slog.Logger) error {
	err := dialAndRun(ctx, cfg, stdin, out, log)
	if err != nil && !errors.Is(err, errFailed) {
		out.emit("error", "error", err.Error())
	}
	return err
}

func dialAndRun(ctx context.Context, cfg clientConfig, stdin io.Reader, out *emitter, log *slog.Logger) error {
	d := net.Dialer{Timeout: replyTimeout}
	if cfg.local != nil {
		d.LocalAddr = &net.TCPAddr{IP: cfg.local}
	}
	nc, err := d.DialContext(ctx, "tcp4", cfg.server)
	if err != nil {
		return err
	}
	conn := nc.(*net.TCPConn)
	conn.SetNoDelay(true)
	// Open the GRE socket before any call exists, so a server's early GRE
	// cannot slip past it.
	gre, err := listenGRE(conn.LocalAddr().(*net.TCPAddr).IP)
	if err != nil {
		conn.Close()
		return err
	}
	c := &client{
		cfg:    cfg,
		log:    log.With("conn", conn.LocalAddr().String()),
		out:    out,
		conn:   conn,
		w:      newControlWriter(conn, cfg.segment),
		gre:    gre,
		server: conn.RemoteAddr().(*net.TCPAddr).IP,
		in:     make(chan alg.Message, 64),
		quit:   make(chan struct{}),
	}
	for _, id := range cfg.callIDs {
		c.calls = append(c.calls, &clientCall{C: id})
	}
	var wg sync.WaitGroup
	wg.Go(c.readControl)
	wg.Go(c.readGRE)
	defer func() {
		close(c.quit)
		conn.Close()
		gre.Close()
		wg.Wait()
	}()
	c.log.Info("connected", "server", conn.RemoteAddr())

	ok, err := c.run(ctx, stdin)
	if err != nil {
		return err
	}
	if !ok {
		return errFailed
	}
	return nil
}

func (c *client) run(ctx context.Context, stdin io.Reader) (bool, error) {
	if err := c.start(ctx); err != nil {
		return false, err
	}
	if err := c.openCalls(ctx); err != nil {
		return false, err
	}
	if c.cfg.sli {
		var slis []alg.Message
		for _, call := range c.calls {
			if call.connected() {
				slis = append(slis, &alg.SetLinkInfo{PeerCallID: call.S, SendACCM: 0xffffffff, ReceiveACCM: 0xffffffff})
			}
		}
		if err := c.w.send(slis...); err != nil {
			return false, err
		}
	}
	ok := c.ping(ctx, 1)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	switch c.cfg.then {
	case thenClear:
		return c.clear(ctx) && ok, nil
	case thenReset:
		return ok, c.reset()
	case thenHold:
		return c.hold(ctx, stdin, ok)
	}
	return ok, c.close()
}

// start opens the control connection (RFC 2637 section 2.1).
func (c *client) start(ctx context.Context) error {
	err := c.w.send(&alg.StartControlConnectionRequest{
		ProtocolVersion:     protocolVersion,
		FramingCapabilities: framingAsyncSync,
		BearerCapabilities:  bearerAnalogDigital,
		FirmwareRevision:    1,
		HostName:            name64("pptpsim"),
		VendorString:        name64("pptp-alg"),
	})
	if err != nil {
		return err
	}
	m, err := c.await(ctx, alg.TypeStartControlConnectionReply, time.Now().Add(replyTimeout))
	if err != nil {
		return err
	}
	if rc := m.(*alg.StartControlConnectionReply).ResultCode; rc != resultOK {
		return fmt.Errorf("start-control-connection-reply: result code %d", rc)
	}
	return nil
}

// openCalls sends every Outgoing-Call-Request at once and collects the
// replies. A reply belongs to the first call without one whose ID it
// echoes; failing that (a router mistranslated it) to the first call
// without one, and the call reports the mismatch.
func (c *client) openCalls(ctx context.Context) error {
	reqs := make([]alg.Message, len(c.calls))
	for i, call := range c.calls {
		reqs[i] = &alg.OutgoingCallRequest{
			CallID:           call.C,
			CallSerialNumber: uint16(i + 1),
			MinBPS:           300,
			MaxBPS:           100000000,
			BearerType:       bearerAnalogDigital,
			FramingType:      framingAsyncSync,
			PacketRecvWindow: recvWindow,
		}
	}
	if err := c.w.send(reqs...); err != nil {
		return err
	}
	deadline := time.Now().Add(replyTimeout)
	for n := range c.calls {
		m, err := c.await(ctx, alg.TypeOutgoingCallReply, deadline)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			c.log.Warn("missing outgoing-call-replies", "got", n, "want", len(c.calls), "err", err)
			return nil
		}
		r := m.(*alg.OutgoingCallReply)
		call := c.pendingCall(r.PeerCallID)
		call.replied, call.S, call.peerCallID, call.result, call.replyOrder = true, r.CallID, r.PeerCallID, r.ResultCode, n
		c.log.Info("outgoing-call-reply", "client_call_id", call.C, "server_call_id", r.CallID,
			"peer_call_id", r.PeerCallID, "result", r.ResultCode)
	}
	return nil
}

func (c *client) pendingCall(peerCallID uint16) *clientCall {
	var first *clientCall
	for _, call := range c.calls {
		if call.replied {
			continue
		}
		if call.C == peerCallID {
			return call
		}
		if first == nil {
			first = call
		}
	}
	return first
}

// ping sends one round of GRE pings on every connected call, waits for the
// echoes, and prints a line per call and a "done" line.
func (c *client) ping(ctx context.Context, n int) bool {
	r := &pingRound{
		n:       n,
		pending: make(map[string]int),
		sent:    make([]int, len(c.calls)),
		echoed:  make([]int, len(c.calls)),
		wrongID: make([]int, len(c.calls)),
		done:    make(chan struct{}),
	}
	type ping struct {
		call    int
		h       greHeader
		payload []byte
	}
	var pings []ping
	for i, call := range c.calls {
		if !call.connected() {
			continue
		}
		for k := range c.cfg.pings {
			p := fmt.Sprintf("%scall=%d idx=%d round=%d seq=%d", pingPrefix, call.C, i, n, k)
			r.pending[p] = i
			pings = append(pings, ping{i, greHeader{CallID: call.S, HasSeq: true, Seq: call.seq}, []byte(p)})
			call.seq++
		}
	}
	c.mu.Lock()
	c.round = r
	r.settle()
	c.mu.Unlock()
	for _, p := range pings {
		// Count a ping sent only once the kernel took it.
		if err := c.gre.send(c.server, p.h, p.payload); err != nil {
			c.log.Warn("gre ping", "err", err)
			c.mu.Lock()
			delete(r.pending, string(p.payload))
			r.settle()
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		r.sent[p.call]++
		c.mu.Unlock()
	}

	t := time.NewTimer(c.cfg.wait)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
	case <-ctx.Done():
	}
	echoOK := c.sync(ctx, uint32(n))

	c.mu.Lock()
	defer c.mu.Unlock()
	c.round = nil
	ok := echoOK
	var sent, echoed, replied int
	for i, call := range c.calls {
		ok = ok && call.connected() && r.echoed[i] == r.sent[i] && r.sent[i] == c.cfg.pings
		sent += r.sent[i]
		echoed += r.echoed[i]
		if call.replied {
			replied++
		}
		c.out.emit("call", "round", n,
			"client_call_id", call.C,
			"server_call_id", ifReplied(call, call.S),
			"peer_call_id", ifReplied(call, call.peerCallID),
			"peer_call_id_ok", call.replied && call.peerCallID == call.C,
			"result_code", ifReplied(call, call.result),
			"early_gre", c.hadEarlyGRE(call),
			"sent", r.sent[i],
			"echoed", r.echoed[i],
			"echo_wrong_call_id", r.wrongID[i],
			"sli_peer_call_id", c.sliFor(call),
		)
	}
	c.out.emit("done", "round", n, "calls", len(c.calls), "replied", replied,
		"sent", sent, "echoed", echoed, "stray_gre", c.stray, "echo_reply", echoOK, "ok", ok)
	return ok
}

// sync sends an Echo-Request and waits for its reply. Since the server
// answers in order, everything it sent before, Set-Link-Info included, has
// been read once the reply is in.
func (c *client) sync(ctx context.Context, id uint32) bool {
	if err := c.w.send(&alg.EchoRequest{Identifier: id}); err != nil {
		c.log.Warn("echo-request", "err", err)
		return false
	}
	deadline := time.Now().Add(replyTimeout)
	for {
		m, err := c.await(ctx, alg.TypeEchoReply, deadline)
		if err != nil {
			c.log.Warn("echo-reply", "err", err)
			return false
		}
		if r := m.(*alg.EchoReply); r.Identifier == id {
			return r.ResultCode == resultOK
		}
	}
}

// ifReplied returns v, or nil (JSON null) for a call without a reply.
func ifReplied[T any](call *clientCall, v T) any {
	if !call.replied {
		return nil
	}
	return v
}

// hadEarlyGRE reports whether the server's unasked GRE for call arrived.
// The caller holds c.mu.
func (c *client) hadEarlyGRE(call *clientCall) bool {
	for _, e := range c.early {
		if call.replied && e.callID == call.C && e.server == call.S {
			return true
		}
	}
	return false
}

// sliFor returns the Peer Call ID of the Set-Link-Info the server sent
// after call's reply, or nil. The caller holds c.mu.
func (c *client) sliFor(call *clientCall) any {
	if !call.replied || call.replyOrder >= len(c.slis) {
		return nil
	}
	return c.slis[call.replyOrder]
}

// clear ends every connected call and then the control connection, the
// way a PNS hangs up (RFC 2637 sections 2.12, 2.13 and 2.3).
func (c *client) clear(ctx context.Context) bool {
	var open []*clientCall
	var reqs []alg.Message
	for _, call := range c.calls {
		if call.connected() {
			open = append(open, call)
			reqs = append(reqs, &alg.CallClearRequest{CallID: call.C})
		}
	}
	ok := true
	if err := c.w.send(reqs...); err != nil {
		c.log.Warn("call-clear-request", "err", err)
		ok = false
	}
	cdn := make(map[*clientCall]uint16)
	deadline := time.Now().Add(c.cfg.wait)
	for ok && len(cdn) < len(open) {
		m, err := c.await(ctx, alg.TypeCallDisconnectNotify, deadline)
		if err != nil {
			c.log.Warn("missing call-disconnect-notify", "err", err)
			ok = false
			break
		}
		id := m.(*alg.CallDisconnectNotify).CallID
		if call := matchCDN(open, cdn, id); call != nil {
			cdn[call] = id
		}
	}
	for _, call := range open {
		id, got := cdn[call]
		if !got {
			c.out.emit("cleared", "client_call_id", call.C, "server_call_id", call.S,
				"cdn_call_id", nil, "cdn_call_id_is", nil)
			ok = false
			continue
		}
		c.out.emit("cleared", "client_call_id", call.C, "server_call_id", call.S,
			"cdn_call_id", id, "cdn_call_id_is", cdnReading(call, id))
	}

	stopped := false
	if err := c.w.send(&alg.StopControlConnectionRequest{Reason: 1}); err == nil {
		_, err = c.await(ctx, alg.TypeStopControlConnectionReply, time.Now().Add(c.cfg.wait))
		stopped = err == nil
	}
	c.conn.Close()
	c.out.emit("closed", "how", string(thenClear), "stop_reply", stopped)
	return ok && stopped
}

// matchCDN finds the call a Call-Disconnect-Notify is for: one whose
// server ID (RFC reading) or client ID (kernel reading) it carries, else
// the oldest one still waiting, since the server answers in order.
func matchCDN(open []*clientCall, done map[*clientCall]uint16, id uint16) *clientCall {
	var first *clientCall
	for _, call := range open {
		if _, ok := done[call]; ok {
			continue
		}
		if call.S == id || call.C == id {
			return call
		}
		if first == nil {
			first = call
		}
	}
	return first
}

// cdnReading names which call ID a Call-Disconnect-Notify carried.
func cdnReading(call *clientCall, id uint16) string {
	switch {
	case id == call.S && id == call.C:
		return "both"
	case id == call.S:
		return "server"
	case id == call.C:
		return "client"
	}
	return "other"
}

func (c *client) close() error {
	err := c.conn.Close()
	c.out.emit("closed", "how", string(thenClose))
	return err
}

// reset closes with SO_LINGER 0, which sends a RST instead of a FIN.
func (c *client) reset() error {
	if err := c.conn.SetLinger(0); err != nil {
		return err
	}
	err := c.conn.Close()
	c.out.emit("closed", "how", string(thenReset))
	return err
}

// hold keeps the calls up. Each stdin line is a command: "ping" sends
// another round; "clear", "close" or "reset" ends as --then would. End of
// stdin or a signal closes the connection normally.
func (c *client) hold(ctx context.Context, stdin io.Reader, ok bool) (bool, error) {
	lines := make(chan string)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(stdin)
		for s.Scan() {
			select {
			case lines <- strings.TrimSpace(s.Text()):
			case <-c.quit:
				return
			}
		}
	}()
	c.out.emit("holding")
	for round := 2; ; {
		select {
		case <-ctx.Done():
			return ok, c.close()
		case m, open := <-c.in:
			if !open {
				c.out.emit("closed", "how", "peer", "error", fmt.Sprint(c.readErr))
				return false, nil
			}
			c.log.Info("ignored while holding", "type", m.Type())
		case line, more := <-lines:
			switch {
			case !more:
				return ok, c.close()
			case line == "ping":
				ok = c.ping(ctx, round) && ok
				round++
			case line == string(thenClear):
				return c.clear(ctx) && ok, nil
			case line == string(thenClose):
				return ok, c.close()
			case line == string(thenReset):
				return ok, c.reset()
			case line != "":
				c.log.Warn("unknown command on stdin", "line", line)
			}
		}
	}
}

// await returns the next message of type want, skipping others.
func (c *client) await(ctx context.Context, want alg.MessageType, deadline time.Time) (alg.Message, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		select {
		case m, ok := <-c.in:
			if !ok {
				return nil, fmt.Errorf("waiting for %v: control connection closed: %v", want, c.readErr)
			}
			if m.Type() == want {
				return m, nil
			}
			c.log.Info("ignored", "type", m.Type(), "waiting_for", want)
		case <-t.C:
			return nil, fmt.Errorf("no %v within the time limit", want)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// readControl reads the control connection. It answers keep-alives and
// records Set-Link-Info itself, and hands everything else to await.
func (c *client) readControl() {
	defer close(c.in)
	r := newControlReader(c.conn)
	for {
		m, err := r.next()
		if err != nil {
			c.readErr = err
			return
		}
		c.log.Debug("received", "type", m.Type())
		switch m := m.(type) {
		case *alg.EchoRequest:
			c.w.send(&alg.EchoReply{Identifier: m.Identifier, ResultCode: resultOK})
			continue
		case *alg.StopControlConnectionRequest:
			c.w.send(&alg.StopControlConnectionReply{ResultCode: resultOK})
		case *alg.SetLinkInfo:
			c.mu.Lock()
			c.slis = append(c.slis, m.PeerCallID)
			c.mu.Unlock()
			continue
		}
		select {
		case c.in <- m:
		case <-c.quit:
			return
		}
	}
}

// readGRE matches arriving GRE to pings and early packets.
func (c *client) readGRE() {
	buf := make([]byte, 1<<16)
	for {
		h, payload, from, err := c.gre.recv(buf)
		if err != nil {
			return
		}
		c.mu.Lock()
		c.matchGRE(h, string(payload))
		c.mu.Unlock()
		c.log.Debug("gre", "from", from, "call_id", h.CallID, "payload", string(payload))
	}
}

// matchGRE records one GRE packet. The caller holds c.mu.
func (c *client) matchGRE(h greHeader, payload string) {
	if rest, ok := strings.CutPrefix(payload, earlyPrefix); ok {
		var e earlyGRE
		if _, err := fmt.Sscanf(rest, "server=%d", &e.server); err == nil {
			e.callID = h.CallID
			c.early = append(c.early, e)
			return
		}
	}
	r := c.round
	if r == nil {
		c.stray++
		return
	}
	i, ok := r.pending[payload]
	switch {
	case !ok:
		c.stray++
	case h.CallID != c.calls[i].C:
		r.wrongID[i]++
	default:
		r.echoed[i]++
		delete(r.pending, payload)
		r.settle()
	}
}
