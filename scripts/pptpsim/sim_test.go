package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pptp-alg/pptp-alg/alg"
)

// These tests run client and server in this process over loopback. Each
// test gives its simulators addresses of their own in 127.0.0.0/8, so that
// their raw GRE sockets see only their own packets and the tests can run
// in parallel.

func needRawGRE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the simulator sends GRE on a raw IP socket")
	}
	c, err := net.ListenPacket("ip4:gre", "127.0.0.1")
	if err != nil {
		t.Skipf("cannot open a raw GRE socket: %v", err)
	}
	c.Close()
}

// simEvent is any JSON line of either side; each event fills some fields.
type simEvent struct {
	Event string `json:"event"`

	// client
	Round         int     `json:"round"`
	ClientCallID  int     `json:"client_call_id"`
	ServerCallID  *int    `json:"server_call_id"`
	PeerCallIDOK  bool    `json:"peer_call_id_ok"`
	EarlyGRE      bool    `json:"early_gre"`
	Sent          int     `json:"sent"`
	Echoed        int     `json:"echoed"`
	SLIPeerCallID *int    `json:"sli_peer_call_id"`
	CDNCallID     *int    `json:"cdn_call_id"`
	CDNCallIDIs   *string `json:"cdn_call_id_is"`
	OK            bool    `json:"ok"`
	How           string  `json:"how"`
	StopReply     bool    `json:"stop_reply"`

	// server
	Addr       string `json:"addr"`
	Conn       string `json:"conn"`
	From       string `json:"from"`
	PeerCallID *int   `json:"peer_call_id"`
	CallID     int    `json:"call_id"`
	Known      bool   `json:"known"`
	Reason     string `json:"reason"`
	Stopped    bool   `json:"stopped"`
	OpenCalls  int    `json:"open_calls"`
}

func parseEvents(t *testing.T, out string) []simEvent {
	t.Helper()
	var evs []simEvent
	for line := range strings.Lines(out) {
		var e simEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

func only(evs []simEvent, name string) []simEvent {
	var r []simEvent
	for _, e := range evs {
		if e.Event == name {
			r = append(r, e)
		}
	}
	return r
}

func intp(v int) *int { return &v }

// syncBuffer collects a simulator's output while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls out until an event satisfies ok.
func waitFor(t *testing.T, out *syncBuffer, ok func(simEvent) bool) simEvent {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, e := range parseEvents(t, out.String()) {
			if ok(e) {
				return e
			}
		}
	}
	t.Fatalf("event not seen; output so far:\n%s", out.String())
	return simEvent{}
}

// sim is a simulator running in a goroutine.
type sim struct {
	out, log syncBuffer
	cancel   context.CancelFunc
	done     chan error
}

func startSim(t *testing.T, stdin io.Reader, args ...string) *sim {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s := &sim{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- run(ctx, args, stdin, &s.out, &s.log) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], s.log.String())
		}
	})
	return s
}

// wait returns the simulator's result once it ends by itself.
func (s *sim) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for stop in the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("simulator did not end; output:\n%s", s.out.String())
		return nil
	}
}

// stop signals the simulator, as SIGTERM would, and waits for it.
func (s *sim) stop() error {
	s.cancel()
	err := <-s.done
	s.done <- err
	return err
}

// startServer starts a server on ip and returns it with its control
// address.
func startServer(t *testing.T, ip string, args ...string) (*sim, string) {
	t.Helper()
	s := startSim(t, nil, append([]string{"server", "--listen", ip + ":0"}, args...)...)
	e := waitFor(t, &s.out, func(e simEvent) bool { return e.Event == "listening" })
	return s, e.Addr
}

func runClientSim(t *testing.T, args ...string) ([]simEvent, error) {
	t.Helper()
	c := startSim(t, nil, append([]string{"client"}, args...)...)
	err := c.wait(t)
	return parseEvents(t, c.out.String()), err
}

// callView is what the tests compare of a client's "call" line.
type callView struct {
	C, S          int
	PeerOK, Early bool
	Sent, Echoed  int
	SLI           *int
}

func callViews(evs []simEvent) []callView {
	var r []callView
	for _, e := range only(evs, "call") {
		v := callView{C: e.ClientCallID, PeerOK: e.PeerCallIDOK, Early: e.EarlyGRE,
			Sent: e.Sent, Echoed: e.Echoed, SLI: e.SLIPeerCallID}
		if e.ServerCallID != nil {
			v.S = *e.ServerCallID
		}
		r = append(r, v)
	}
	return r
}

// TestLoopback places three calls on one control connection in every
// segment mode (on both sides) and with both readings of the
// Call-Disconnect-Notify call ID.
func TestLoopback(t *testing.T) {
	needRawGRE(t)
	n := 0
	for _, seg := range []string{"normal", "split", "coalesce"} {
		for _, cdn := range []string{"rfc", "kernel"} {
			n++
			serverIP, clientIP := fmt.Sprintf("127.0.2.%d", n), fmt.Sprintf("127.0.3.%d", n)
			t.Run(seg+"/"+cdn, func(t *testing.T) {
				t.Parallel()
				srv, addr := startServer(t, serverIP, "--first-call-id", "100", "--cdn", cdn,
					"--early-gre", "--send-sli", "--segment", seg)
				cev, err := runClientSim(t, "--server", addr, "--local", clientIP, "--call-ids", "7,8,9",
					"--segment", seg, "--pings", "3", "--sli", "--then", "clear")
				if err != nil {
					t.Errorf("client: %v", err)
				}
				// The server sees the end of the connection after the
				// client returned.
				waitFor(t, &srv.out, func(e simEvent) bool { return e.Event == "closed" })
				if err := srv.stop(); err != nil {
					t.Errorf("server: %v", err)
				}
				sev := parseEvents(t, srv.out.String())

				wantCalls := []callView{
					{C: 7, S: 100, PeerOK: true, Early: true, Sent: 3, Echoed: 3, SLI: intp(7)},
					{C: 8, S: 101, PeerOK: true, Early: true, Sent: 3, Echoed: 3, SLI: intp(8)},
					{C: 9, S: 102, PeerOK: true, Early: true, Sent: 3, Echoed: 3, SLI: intp(9)},
				}
				if diff := cmp.Diff(wantCalls, callViews(cev)); diff != "" {
					t.Errorf("client call lines (-want +got):\n%s", diff)
				}

				type cleared struct {
					C, CDN int
					Is     string
				}
				var want, got []cleared
				for i, c := range []int{7, 8, 9} {
					if cdn == "rfc" {
						want = append(want, cleared{c, 100 + i, "server"})
					} else {
						want = append(want, cleared{c, c, "client"})
					}
				}
				for _, e := range only(cev, "cleared") {
					g := cleared{C: e.ClientCallID}
					if e.CDNCallID != nil && e.CDNCallIDIs != nil {
						g.CDN, g.Is = *e.CDNCallID, *e.CDNCallIDIs
					}
					got = append(got, g)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("client cleared lines (-want +got):\n%s", diff)
				}
				if c := only(cev, "closed"); len(c) != 1 || !c[0].StopReply {
					t.Errorf("client closed lines %+v, want one with a Stop-Control-Connection-Reply", c)
				}

				// What the server saw.
				var calls, slis, clears []int
				for _, e := range only(sev, "call") {
					calls = append(calls, *e.PeerCallID, *e.ServerCallID)
				}
				for _, e := range only(sev, "sli") {
					if e.Known {
						slis = append(slis, *e.PeerCallID)
					}
				}
				for _, e := range only(sev, "clear") {
					if e.Known {
						clears = append(clears, *e.PeerCallID)
					}
				}
				if diff := cmp.Diff([]int{7, 100, 8, 101, 9, 102}, calls); diff != "" {
					t.Errorf("server call events, peer and server IDs (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]int{100, 101, 102}, slis); diff != "" {
					t.Errorf("server sli events (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]int{7, 8, 9}, clears); diff != "" {
					t.Errorf("server clear events (-want +got):\n%s", diff)
				}
				gre := 0
				for _, e := range only(sev, "gre") {
					if e.Known && e.From == clientIP {
						gre++
					}
				}
				if gre != 9 {
					t.Errorf("server saw %d known GRE packets from %s, want 9", gre, clientIP)
				}
				closed := only(sev, "closed")
				if len(closed) != 1 || closed[0].Reason != "eof" || !closed[0].Stopped || closed[0].OpenCalls != 0 {
					t.Errorf("server closed events %+v, want one: eof after stop, no open calls", closed)
				}
			})
		}
	}
}

// TestSharedServer runs two clients at once against one server, with the
// same call IDs, even twice on one connection.
func TestSharedServer(t *testing.T) {
	needRawGRE(t)
	srv, addr := startServer(t, "127.0.4.1", "--first-call-id", "1", "--cdn", "kernel", "--early-gre")
	// Both run at once; the test goroutine then waits for each.
	var clients []*sim
	for i := range 2 {
		clients = append(clients, startSim(t, nil, "client", "--server", addr,
			"--local", fmt.Sprintf("127.0.5.%d", i+1), "--call-ids", "1,1", "--pings", "4", "--segment", "coalesce"))
	}
	var results [][]simEvent
	for i, c := range clients {
		if err := c.wait(t); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
		results = append(results, parseEvents(t, c.out.String()))
	}
	srv.stop()

	seen := make(map[int]bool)
	for i, evs := range results {
		calls := callViews(evs)
		if len(calls) != 2 {
			t.Fatalf("client %d: %d call lines, want 2", i, len(calls))
		}
		for _, c := range calls {
			if c.C != 1 || !c.PeerOK || !c.Early || c.Echoed != 4 {
				t.Errorf("client %d: call %+v, want call ID 1 with its reply, early GRE and 4 echoes", i, c)
			}
			if seen[c.S] {
				t.Errorf("server call ID %d handed out twice", c.S)
			}
			seen[c.S] = true
		}
	}
}

// TestEndings checks that the server sees each way the client can end.
func TestEndings(t *testing.T) {
	needRawGRE(t)
	tests := []struct {
		then   string
		reason string
	}{
		{"close", "eof"},
		{"reset", "reset"},
	}
	for i, tt := range tests {
		t.Run(tt.then, func(t *testing.T) {
			t.Parallel()
			srv, addr := startServer(t, fmt.Sprintf("127.0.6.%d", i+1))
			cev, err := runClientSim(t, "--server", addr, "--local", fmt.Sprintf("127.0.7.%d", i+1),
				"--calls", "2", "--then", tt.then)
			if err != nil {
				t.Errorf("client: %v", err)
			}
			if c := only(cev, "closed"); len(c) != 1 || c[0].How != tt.then {
				t.Errorf("client closed lines %+v, want one, how %q", c, tt.then)
			}
			e := waitFor(t, &srv.out, func(e simEvent) bool { return e.Event == "closed" })
			if e.Reason != tt.reason || e.Stopped || e.OpenCalls != 2 {
				t.Errorf("server closed event %+v, want reason %s, not stopped, 2 open calls", e, tt.reason)
			}
		})
	}
}

// TestHold keeps two calls up, pings again on command, and closes at the
// end of stdin.
func TestHold(t *testing.T) {
	needRawGRE(t)
	srv, addr := startServer(t, "127.0.8.1")
	stdin, commands := io.Pipe()
	t.Cleanup(func() { commands.Close() })
	c := startSim(t, stdin, "client", "--server", addr, "--local", "127.0.8.2", "--calls", "2", "--then", "hold")
	waitFor(t, &c.out, func(e simEvent) bool { return e.Event == "holding" })

	if _, err := io.WriteString(commands, "ping\n"); err != nil {
		t.Fatal(err)
	}
	done := waitFor(t, &c.out, func(e simEvent) bool { return e.Event == "done" && e.Round == 2 })
	if !done.OK {
		t.Errorf("second round not ok:\n%s", c.out.String())
	}
	if closed := only(parseEvents(t, srv.out.String()), "closed"); len(closed) != 0 {
		t.Errorf("server saw the connection close while the client held it: %+v", closed)
	}

	commands.Close()
	if err := c.wait(t); err != nil {
		t.Errorf("client: %v", err)
	}
	e := waitFor(t, &srv.out, func(e simEvent) bool { return e.Event == "closed" })
	if e.Reason != "eof" || e.OpenCalls != 2 {
		t.Errorf("server closed event %+v, want eof with 2 open calls", e)
	}
}

// TestClientReportsFailures runs the client against a broken PAC that
// answers with the wrong Peer Call ID and echoes no GRE.
func TestClientReportsFailures(t *testing.T) {
	needRawGRE(t)
	ln, err := net.Listen("tcp4", "127.0.9.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r, w := newControlReader(conn), newControlWriter(conn, segmentNormal)
		for {
			m, err := r.next()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *alg.StartControlConnectionRequest:
				w.send(&alg.StartControlConnectionReply{ProtocolVersion: protocolVersion, ResultCode: resultOK})
			case *alg.OutgoingCallRequest:
				w.send(&alg.OutgoingCallReply{CallID: 50, PeerCallID: m.CallID + 1,
					ResultCode: alg.OutgoingCallResultConnected})
			case *alg.EchoRequest:
				w.send(&alg.EchoReply{Identifier: m.Identifier, ResultCode: resultOK})
			}
		}
	}()

	cev, err := runClientSim(t, "--server", ln.Addr().String(), "--local", "127.0.9.2",
		"--call-ids", "5", "--pings", "2", "--wait", "200ms", "--then", "close")
	if !errors.Is(err, errFailed) {
		t.Errorf("client: got %v, want errFailed", err)
	}
	want := []callView{{C: 5, S: 50, PeerOK: false, Sent: 2, Echoed: 0}}
	if diff := cmp.Diff(want, callViews(cev)); diff != "" {
		t.Errorf("call lines (-want +got):\n%s", diff)
	}
	if d := only(cev, "done"); len(d) != 1 || d[0].OK {
		t.Errorf("done lines %+v, want one, not ok", d)
	}
}

// TestClientNoServer checks that a client that cannot even connect still
// prints a line to read.
func TestClientNoServer(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cev, err := runClientSim(t, "--server", addr)
	if err == nil || errors.Is(err, errFailed) {
		t.Errorf("client: got %v, want a connection error", err)
	}
	if e := only(cev, "error"); len(e) != 1 {
		t.Errorf("output %+v, want one error line", cev)
	}
}
