package alg

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePlane is an in-memory DataPlane.
type fakePlane struct {
	mu    sync.Mutex
	in    map[natKey]netip.AddrPort // server/NAT ID -> client/client ID
	out   map[string]bool
	fail  error
	delay time.Duration // each addition's round trip, without the lock
	// AddMany's: how often it was called, and an error for some additions.
	many   [][]Addition
	refuse func(Addition) error
}

func newFakePlane() *fakePlane {
	return &fakePlane{in: map[natKey]netip.AddrPort{}, out: map[string]bool{}}
}

func outKey(client, server netip.Addr, serverID uint16) string {
	return fmt.Sprintf("%v>%v/%d", client, server, serverID)
}

func (f *fakePlane) AddInbound(server netip.Addr, natID uint16, client netip.Addr, clientID uint16) error {
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.in[natKey{server, natID}] = netip.AddrPortFrom(client, clientID)
	return nil
}

func (f *fakePlane) DeleteInbound(server netip.Addr, natID uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.in, natKey{server, natID})
	return nil
}

func (f *fakePlane) AddOutbound(client, server netip.Addr, serverID uint16) error {
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.out[outKey(client, server, serverID)] = true
	return nil
}

func (f *fakePlane) AddMany(adds []Addition) []error {
	f.mu.Lock()
	f.many = append(f.many, adds)
	refuse := f.refuse
	f.mu.Unlock()
	errs := make([]error, len(adds))
	for i, a := range adds {
		switch {
		case refuse != nil && refuse(a) != nil:
			errs[i] = refuse(a)
		case a.Outbound:
			errs[i] = f.AddOutbound(a.Client, a.Server, a.ServerID)
		default:
			errs[i] = f.AddInbound(a.Server, a.NATID, a.Client, a.ClientID)
		}
	}
	return errs
}

func (f *fakePlane) DeleteOutbound(client, server netip.Addr, serverID uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.out, outKey(client, server, serverID))
	return nil
}

func (f *fakePlane) sizes() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.in), len(f.out)
}

var (
	server  = netip.MustParseAddr("203.0.113.2")
	server2 = netip.MustParseAddr("203.0.113.3")
	hostA   = netip.MustParseAddr("192.168.77.11")
	hostB   = netip.MustParseAddr("192.168.77.12")
)

func ocrq(callID uint16) []byte {
	return (&OutgoingCallRequest{CallID: callID, CallSerialNumber: 9}).Append(nil)
}

func ocrp(callID, peer uint16, result uint8) []byte {
	return (&OutgoingCallReply{CallID: callID, PeerCallID: peer, ResultCode: result}).Append(nil)
}

// dial runs an outgoing call through s and returns the NAT call ID the
// server saw.
func dial(t *testing.T, s *Session, clientID, serverID uint16) uint16 {
	t.Helper()
	m := ocrq(clientID)
	fwd, reply, err := s.fromClient(m)
	if err != nil || !fwd || reply != nil {
		t.Fatalf("OCRQ %d: forward=%v reply=%v err=%v", clientID, fwd, reply, err)
	}
	natID := get16(m, 12)
	r := ocrp(serverID, natID, OutgoingCallResultConnected)
	if err := s.fromServer(r); err != nil {
		t.Fatalf("OCRP: %v", err)
	}
	if got := get16(r, 14); got != clientID {
		t.Fatalf("OCRP peer call ID = %d after translation, want the client's %d", got, clientID)
	}
	return natID
}

func TestCollidingClientsGetDistinctNATIDs(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	var nats []uint16
	for i, host := range []netip.Addr{hostA, hostB, netip.MustParseAddr("192.168.77.13")} {
		s, err := tab.OpenSession(host, server)
		if err != nil {
			t.Fatal(err)
		}
		nats = append(nats, dial(t, s, 1, uint16(100+i)))
	}
	if nats[0] != 1 {
		t.Errorf("first client's ID was translated to %d; want it kept (no collision)", nats[0])
	}
	if nats[0] == nats[1] || nats[1] == nats[2] || nats[0] == nats[2] {
		t.Errorf("NAT call IDs collide: %v", nats)
	}
	if in, out := dp.sizes(); in != 3 || out != 3 {
		t.Errorf("data plane has %d inbound, %d outbound entries; want 3, 3", in, out)
	}
	// Another server is another ID space: no translation needed there.
	s, _ := tab.OpenSession(hostA, server2)
	if got := dial(t, s, 1, 5); got != 1 {
		t.Errorf("first call to a second server got NAT ID %d, want 1", got)
	}
}

func TestInboundInstalledBeforeRequestForwarded(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	s, _ := tab.OpenSession(hostA, server)
	m := ocrq(7)
	if _, _, err := s.fromClient(m); err != nil {
		t.Fatal(err)
	}
	// The server's first GRE can race its reply; it must already be mapped.
	if got, ok := dp.in[natKey{server, get16(m, 12)}]; !ok || got != netip.AddrPortFrom(hostA, 7) {
		t.Fatalf("inbound entry = %v, %v; want %v", got, ok, netip.AddrPortFrom(hostA, 7))
	}
}

func TestTranslationOfEveryCallIDMessage(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	first, _ := tab.OpenSession(hostB, server)
	dial(t, first, 5, 300) // takes NAT ID 5, so hostA's 5 is translated
	s, _ := tab.OpenSession(hostA, server)
	natID := dial(t, s, 5, 400)
	if natID == 5 {
		t.Fatal("expected a translated NAT ID")
	}
	const C, S = 5, 400
	type msgCase struct {
		name       string
		fromClient bool
		msg        []byte
		off        int
		want       uint16
	}
	cases := []msgCase{
		{"set-link-info from server", false, (&SetLinkInfo{PeerCallID: natID}).Append(nil), 12, C},
		{"set-link-info from client", true, (&SetLinkInfo{PeerCallID: S}).Append(nil), 12, S},
		{"wan-error-notify from server", false, (&WANErrorNotify{PeerCallID: natID}).Append(nil), 12, C},
		{"incoming-call-connected from server", false, (&IncomingCallConnected{PeerCallID: natID}).Append(nil), 12, C},
		{"echo passes", true, (&EchoRequest{Identifier: 0x1234}).Append(nil), 12, 0x0000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.fromClient {
				_, _, err = s.fromClient(tc.msg)
			} else {
				err = s.fromServer(tc.msg)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := get16(tc.msg, tc.off); got != tc.want {
				t.Errorf("call ID field = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestServerOnlyMessagesFromClient(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	s, _ := tab.OpenSession(hostA, server)
	dial(t, s, 5, 400)
	for _, m := range []Message{
		&OutgoingCallReply{CallID: 400, PeerCallID: 5, ResultCode: OutgoingCallResultConnected},
		&IncomingCallRequest{CallID: 401},
		&IncomingCallConnected{PeerCallID: 5},
		&WANErrorNotify{PeerCallID: 400},
		&IncomingCallReply{CallID: 6, PeerCallID: 999, ResultCode: incomingCallResultAccept}, // never offered
	} {
		t.Run(m.Type().String(), func(t *testing.T) {
			forward, reply, err := s.fromClient(m.Append(nil))
			if err == nil || forward || reply != nil {
				t.Fatalf("fromClient = %v, %x, %v; want the connection refused", forward, reply, err)
			}
			t.Log(err)
		})
	}
	if n := len(tab.Calls()); n != 1 {
		t.Errorf("%d calls after the bad messages, want the 1 from before", n)
	}
}

func TestRefusalsLoggedBounded(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	tab := NewTable(newFakePlane(), Limits{CallsPerClient: 2}, log)
	s, _ := tab.OpenSession(hostA, server)
	const asks = 1000
	for i := range asks {
		forward, reply, err := s.fromClient(ocrq(uint16(i + 1)))
		if i < 2 {
			if err != nil || !forward {
				t.Fatalf("call %d: %v, %v", i, forward, err)
			}
			continue
		}
		r, perr := Parse(reply)
		if err != nil || forward || perr != nil {
			t.Fatalf("call %d: forward %v, reply %x (%v), err %v; want a refusal", i, forward, reply, perr, err)
		}
		if ocr := r.(*OutgoingCallReply); ocr.ResultCode != OutgoingCallResultGeneralError || ocr.ErrorCode != ErrorCodeNoResource || ocr.PeerCallID != uint16(i+1) {
			t.Fatalf("refusal %+v", ocr)
		}
	}
	s.Close()
	lines := strings.Count(logged.String(), "level=WARN")
	if lines > loggedRefusals+2 || !strings.Contains(logged.String(), "refused="+fmt.Sprint(asks-2)) {
		t.Errorf("%d log lines on %d refusals; want at most %d and a total:\n%s", lines, asks-2, loggedRefusals+2, logged.String())
	}
}

func TestClearAndDisconnectBothReadings(t *testing.T) {
	for _, reading := range []string{"kernel", "rfc"} {
		t.Run(reading, func(t *testing.T) {
			dp := newFakePlane()
			tab := NewTable(dp, DefaultLimits, nil)
			other, _ := tab.OpenSession(hostB, server)
			dial(t, other, 9, 1)
			s, _ := tab.OpenSession(hostA, server)
			natID := dial(t, s, 9, 2)

			clr := (&CallClearRequest{CallID: 9}).Append(nil)
			if _, _, err := s.fromClient(clr); err != nil {
				t.Fatal(err)
			}
			if got := get16(clr, 12); got != natID {
				t.Errorf("Call-Clear-Request call ID = %d, want NAT ID %d", got, natID)
			}
			if len(tab.Calls()) != 2 {
				t.Fatal("call released before the server confirmed the clear")
			}
			id, want := natID, uint16(9) // the kernel reading: the client's ID, translated back
			if reading == "rfc" {
				id, want = 2, 2 // RFC 2637: the server's own ID, untouched
			}
			cdn := (&CallDisconnectNotify{CallID: id}).Append(nil)
			if err := s.fromServer(cdn); err != nil {
				t.Fatal(err)
			}
			if got := get16(cdn, 12); got != want {
				t.Errorf("Call-Disconnect-Notify call ID = %d, want %d", got, want)
			}
			calls := tab.Calls()
			if len(calls) != 1 || calls[0].Client != hostB {
				t.Fatalf("after disconnect: calls = %+v; want only hostB's", calls)
			}
			if in, out := dp.sizes(); in != 1 || out != 1 {
				t.Errorf("data plane left with %d inbound, %d outbound; want 1, 1", in, out)
			}
		})
	}
}

func TestClearWithoutDisconnectExpires(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	now := time.Unix(1000, 0)
	tab.now = func() time.Time { return now }
	s, _ := tab.OpenSession(hostA, server)
	dial(t, s, 3, 30)
	s.fromClient((&CallClearRequest{CallID: 3}).Append(nil))
	none := func(CallInfo) Traffic { return Traffic{} }
	if n := tab.Expire(time.Hour, none); n != 0 {
		t.Fatalf("expired %d calls inside the grace period", n)
	}
	now = now.Add(clearGrace + time.Millisecond)
	if n := tab.Expire(time.Hour, none); n != 1 {
		t.Fatalf("expired %d calls after the grace period, want 1", n)
	}
}

func TestIdleExpiry(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	now := time.Unix(1000, 0)
	tab.now = func() time.Time { return now }
	s, _ := tab.OpenSession(hostA, server)
	dial(t, s, 1, 10)
	dial(t, s, 2, 11)
	var busy Traffic
	tr := func(c CallInfo) Traffic {
		if c.ClientCallID == 1 {
			return busy
		}
		return Traffic{}
	}
	for range 5 {
		now = now.Add(30 * time.Second)
		busy.PacketsIn++
		tab.Expire(time.Minute, tr)
	}
	calls := tab.Calls()
	if len(calls) != 1 || calls[0].ClientCallID != 1 {
		t.Fatalf("after 150 s: calls = %+v; want only the busy call 1", calls)
	}
}

func TestSessionCloseReleasesCalls(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	s, _ := tab.OpenSession(hostA, server)
	for i := range uint16(3) {
		dial(t, s, i+1, i+50)
	}
	s.Close()
	s.Close()
	if n := len(tab.Calls()); n != 0 {
		t.Fatalf("%d calls left after close", n)
	}
	if in, out := dp.sizes(); in != 0 || out != 0 {
		t.Fatalf("data plane left with %d inbound, %d outbound", in, out)
	}
	if tab.Sessions() != 0 {
		t.Fatalf("sessions = %d", tab.Sessions())
	}
}

func TestLimits(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, Limits{ConnsPerClient: 2, CallsPerClient: 3, Calls: 4}, nil)
	s1, _ := tab.OpenSession(hostA, server)
	if _, err := tab.OpenSession(hostA, server); err != nil {
		t.Fatal(err)
	}
	if _, err := tab.OpenSession(hostA, server); !errors.Is(err, ErrTooManyConns) {
		t.Fatalf("third connection: err = %v, want ErrTooManyConns", err)
	}
	for i := range uint16(3) {
		dial(t, s1, i+1, i+1)
	}
	m := ocrq(4)
	fwd, reply, err := s1.fromClient(m)
	if err != nil || fwd || reply == nil {
		t.Fatalf("fourth call: forward=%v reply=%v err=%v; want a refusal", fwd, reply, err)
	}
	msg, err := Parse(reply)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := msg.(*OutgoingCallReply)
	if !ok || r.PeerCallID != 4 || r.ResultCode != OutgoingCallResultGeneralError || r.ErrorCode != ErrorCodeNoResource {
		t.Fatalf("refusal = %+v", msg)
	}
	// hostB is not held back by hostA's cap, only by the global one.
	sb, _ := tab.OpenSession(hostB, server)
	dial(t, sb, 1, 99)
	if _, reply, _ := sb.fromClient(ocrq(2)); reply == nil {
		t.Fatal("global cap of 4 calls not enforced")
	}
}

func TestDataPlaneFailureRefusesCall(t *testing.T) {
	dp := newFakePlane()
	dp.fail = errors.New("netlink: no buffer space")
	tab := NewTable(dp, DefaultLimits, nil)
	s, _ := tab.OpenSession(hostA, server)
	fwd, reply, err := s.fromClient(ocrq(1))
	if err != nil || fwd || reply == nil {
		t.Fatalf("forward=%v reply=%v err=%v; want a refusal", fwd, reply, err)
	}
	if len(tab.Calls()) != 0 {
		t.Fatal("a refused call stayed in the table")
	}
}

func TestServerRefusalReleasesCall(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	s, _ := tab.OpenSession(hostA, server)
	m := ocrq(1)
	s.fromClient(m)
	r := ocrp(0, get16(m, 12), 4) // busy
	if err := s.fromServer(r); err != nil {
		t.Fatal(err)
	}
	if len(tab.Calls()) != 0 {
		t.Fatal("refused call kept")
	}
	if in, _ := dp.sizes(); in != 0 {
		t.Fatal("inbound entry kept for a refused call")
	}
}

func TestIncomingCall(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	blocker, _ := tab.OpenSession(hostB, server)
	dial(t, blocker, 6, 1)
	s, _ := tab.OpenSession(hostA, server)
	if err := s.fromServer((&IncomingCallRequest{CallID: 77}).Append(nil)); err != nil {
		t.Fatal(err)
	}
	icrp := (&IncomingCallReply{CallID: 6, PeerCallID: 77, ResultCode: 1}).Append(nil)
	if _, _, err := s.fromClient(icrp); err != nil {
		t.Fatal(err)
	}
	natID := get16(icrp, 12)
	if natID == 6 || get16(icrp, 14) != 77 {
		t.Fatalf("ICRP call ID %d peer %d; want translated, peer 77", natID, get16(icrp, 14))
	}
	iccn := (&IncomingCallConnected{PeerCallID: natID}).Append(nil)
	s.fromServer(iccn)
	if get16(iccn, 12) != 6 {
		t.Fatalf("ICCN peer call ID = %d, want 6", get16(iccn, 12))
	}
	if !dp.out[outKey(hostA, server, 77)] {
		t.Fatal("no outbound entry for the incoming call")
	}
	// A reply to a call the server never offered is a protocol error.
	if _, _, err := s.fromClient((&IncomingCallReply{CallID: 8, PeerCallID: 78, ResultCode: 1}).Append(nil)); err == nil {
		t.Fatal("unsolicited Incoming-Call-Reply accepted")
	}
}

func BenchmarkCallSetupTeardown(b *testing.B) {
	tab := NewTable(newFakePlane(), Limits{ConnsPerClient: 1 << 20, CallsPerClient: 1 << 20, Calls: 1 << 20}, nil)
	s, _ := tab.OpenSession(hostA, server)
	for i := range uint16(10000) { // a full table
		c, _ := s.startCall(i + 1)
		s.establish(c, i+1)
	}
	other, _ := tab.OpenSession(hostB, server)
	b.ReportAllocs()
	for b.Loop() {
		c, err := other.startCall(1)
		if err != nil {
			b.Fatal(err)
		}
		other.establish(c, 60000)
		other.release(c, "bench")
	}
}

// TestSessionOf: a call's server and NAT call ID name its session (what
// `pptp-alg drop` closes), until the call is released.
func TestSessionOf(t *testing.T) {
	tab := NewTable(newFakePlane(), DefaultLimits, nil)
	a, _ := tab.OpenSession(hostA, server)
	b, _ := tab.OpenSession(hostB, server)
	natA := dial(t, a, 1, 50)
	natB := dial(t, b, 1, 51)
	if s, c := tab.SessionOf(server, natB); s != b || c.Client != hostB || c.NATCallID != natB || c.ServerCallID != 51 {
		t.Errorf("SessionOf(server, %d) = %p %+v; want B's session and call", natB, s, c)
	}
	if s, _ := tab.SessionOf(server2, natA); s != nil {
		t.Errorf("SessionOf of another server = %p, want nil", s)
	}
	b.Close()
	if s, _ := tab.SessionOf(server, natB); s != nil {
		t.Errorf("SessionOf after B closed = %p, want nil", s)
	}
	if s, _ := tab.SessionOf(server, natA); s != a {
		t.Errorf("SessionOf(A's call) = %p, want A's session", s)
	}
}

// TestReinstallBatches: Reinstall writes every call's halves again, an
// established call's both and a call still waiting for its reply its
// inbound half only, in batches of at most reinstallBatch additions when
// the data plane makes several at once.
func TestReinstallBatches(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, Limits{ConnsPerClient: 16, CallsPerClient: 1000, Calls: 1000}, nil)
	s, err := tab.OpenSession(hostA, server)
	if err != nil {
		t.Fatal(err)
	}
	const established, waiting = 300, 5
	for i := range uint16(established) {
		dial(t, s, i+1, 1000+i)
	}
	for i := range uint16(waiting) {
		if fwd, _, err := s.fromClient(ocrq(500 + i)); err != nil || !fwd {
			t.Fatalf("OCRQ %d: forward=%v err=%v", 500+i, fwd, err)
		}
	}
	dp.mu.Lock()
	clear(dp.in)
	clear(dp.out)
	dp.many = nil
	dp.mu.Unlock()

	if err := tab.Reinstall(); err != nil {
		t.Fatal(err)
	}
	if in, out := dp.sizes(); in != established+waiting || out != established {
		t.Errorf("after Reinstall: %d inbound, %d outbound; want %d, %d", in, out, established+waiting, established)
	}
	total := 2*established + waiting
	var sizes []int
	for _, b := range dp.many {
		sizes = append(sizes, len(b))
	}
	if want := (total + reinstallBatch - 1) / reinstallBatch; len(sizes) != want || (len(sizes) > 0 && slices.Max(sizes) > reinstallBatch) {
		t.Errorf("AddMany batches of %v additions; want %d of at most %d", sizes, want, reinstallBatch)
	}
}
