package alg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestEstablishAfterRelease is the race the relay can lose: the server's
// Outgoing-Call-Reply finds the call, an expiry releases it, and only then
// is it established. The outbound half must not be installed, since
// nothing would ever delete it.
func TestEstablishAfterRelease(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	s, err := tab.OpenSession(hostA, server)
	if err != nil {
		t.Fatal(err)
	}
	if fwd, _, err := s.fromClient(ocrq(7)); err != nil || !fwd {
		t.Fatalf("OCRQ: forward=%v err=%v", fwd, err)
	}
	c := s.find(func(c *call) bool { return c.ClientCallID == 7 })
	s.release(c, "expired meanwhile")
	if err := s.establish(c, 900); err != nil {
		t.Fatal(err)
	}
	if in, out := dp.sizes(); in != 0 || out != 0 || len(tab.Calls()) != 0 {
		t.Errorf("after release then establish: %d inbound, %d outbound, %d calls; want none", in, out, len(tab.Calls()))
	}
}

// TestServerCallIDSharedRefused: a server that gives one client the same
// call ID for two calls would have them share one outbound element, which
// the first call's release would take from the second.
func TestServerCallIDSharedRefused(t *testing.T) {
	dp := newFakePlane()
	tab := NewTable(dp, DefaultLimits, nil)
	s, err := tab.OpenSession(hostA, server)
	if err != nil {
		t.Fatal(err)
	}
	dial(t, s, 1, 500)
	m := ocrq(2)
	if _, _, err := s.fromClient(m); err != nil {
		t.Fatal(err)
	}
	if err := s.fromServer(ocrp(500, get16(m, 12), OutgoingCallResultConnected)); err == nil {
		t.Error("second call given the server call ID of the first: no error")
	}
	if in, out := dp.sizes(); in != 1 || out != 1 || len(tab.Calls()) != 1 {
		t.Errorf("%d inbound, %d outbound, %d calls; want the first call's alone", in, out, len(tab.Calls()))
	}
}

// FuzzSession drives the call table and the translator with arbitrary
// reads of messages from clients and servers (their data-plane additions
// made at once), interleaved with expiries, releases
// and establishments of calls found before they were released (what a
// concurrent expiry does to the relay), data-plane failures, reinstalls and
// sessions closing. After every step the fake plane must hold exactly the
// entries of the calls in the table, and nothing once every session closed.
func FuzzSession(f *testing.F) {
	f.Add([]byte{0, 7, 1, 0, 0, 0, 8, 1, 0, 0, 1, 8, 5, 1, 1, 2, 60})
	f.Add([]byte{0, 7, 2, 0, 0, 3, 0, 0, 0, 0, 4, 0, 1, 8, 3, 1, 1})
	f.Add([]byte{6, 0, 7, 3, 0, 6, 0, 0, 7, 0, 0, 0, 7, 0})
	f.Add([]byte{1, 9, 4, 0, 0, 0, 10, 2, 4, 1, 2, 5, 5, 0, 12, 1, 1, 8, 0, 0})
	// Two calls the server gives one server call ID, then one released.
	f.Add([]byte{0, 6, 1, 0, 0, 0, 6, 2, 0, 0, 1, 7, 5, 1, 1, 1, 7, 5, 2, 1, 4, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		dp := newFakePlane()
		tab := NewTable(dp, Limits{ConnsPerClient: 4, CallsPerClient: 6, Calls: 10}, nil)
		now := time.Unix(1000, 0)
		tab.now = func() time.Time { return now }
		ends := []struct{ client, server netip.Addr }{{hostA, server}, {hostB, server}, {hostA, server2}}
		sessions := make([]*Session, len(ends))
		open := func(i int) {
			s, err := tab.OpenSession(ends[i].client, ends[i].server)
			if err != nil {
				t.Fatalf("open session %d: %v", i, err)
			}
			sessions[i] = s
		}
		for i := range ends {
			open(i)
		}
		var seen []*call // every call ever made, released or not
		known := map[*call]bool{}
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		for step := 0; len(data) > 0; step++ {
			op := next()
			s := sessions[int(op>>3)%len(sessions)]
			switch op % 8 {
			case 0, 1: // one read of 1 to 3 messages from the client, or the server
				var buf []byte
				var msgs []readMsg
				for range 1 + next()%3 {
					m := fuzzMessage(next(), next(), next(), next())
					msgs = append(msgs, readMsg{start: len(buf), end: len(buf) + len(m)})
					buf = append(buf, m...)
				}
				s.translate(buf, msgs, op%8 == 0, func([]byte) error { return nil })
			case 2: // the idle check, some seconds on
				now = now.Add(time.Duration(next()) * time.Second)
				tab.Expire(30*time.Second, func(CallInfo) Traffic { return Traffic{} })
			case 3: // establish a call found before it was released
				if len(seen) > 0 {
					c := seen[int(next())%len(seen)]
					c.session.establish(c, uint16(next()%8))
				}
			case 4: // release a call found before, perhaps released already
				if len(seen) > 0 {
					c := seen[int(next())%len(seen)]
					c.session.release(c, "fuzz")
				}
			case 5: // the control connection ends; another opens
				i := int(op>>3) % len(sessions)
				sessions[i].Close()
				open(i)
			case 6: // the data plane starts or stops failing
				if next()%2 == 0 {
					dp.setFail(errors.New("fuzz: data plane down"))
				} else {
					dp.setFail(nil)
				}
			case 7: // the kernel state is written again
				tab.Reinstall()
			}
			for _, s := range sessions {
				s.t.mu.Lock()
				for _, c := range s.calls {
					if !known[c] {
						known[c] = true
						seen = append(seen, c)
					}
				}
				s.t.mu.Unlock()
			}
			if err := planeMatches(tab, dp); err != nil {
				t.Fatalf("after step %d (op %d): %v", step, op%8, err)
			}
		}
		for _, s := range sessions {
			s.Close()
		}
		if in, out := dp.sizes(); in != 0 || out != 0 || len(tab.Calls()) != 0 {
			t.Fatalf("after every session closed: %d inbound, %d outbound, %d calls; want none", in, out, len(tab.Calls()))
		}
	})
}

// fuzzMessage builds a well-framed control message of one of the types
// (the relay translates nothing else), with small call IDs so that they
// meet the calls in the table, and a result byte that is often "accepted".
func fuzzMessage(typ, callID, peerID, result byte) []byte {
	t := MessageType(typ%15 + 1)
	m := make([]byte, t.Len())
	binary.BigEndian.PutUint16(m, uint16(len(m)))
	binary.BigEndian.PutUint16(m[2:], controlMessage)
	binary.BigEndian.PutUint32(m[4:], Magic)
	binary.BigEndian.PutUint16(m[8:], uint16(t))
	if off := t.CallIDOffset(); off >= 0 {
		put16(m, off, uint16(callID%8))
	}
	if off := t.PeerCallIDOffset(); off >= 0 {
		put16(m, off, uint16(peerID%8))
	}
	if len(m) > 16 && off16HasResult(t) {
		m[16] = result % 4
	}
	return m
}

func off16HasResult(t MessageType) bool {
	return t == TypeOutgoingCallReply || t == TypeIncomingCallReply
}

// planeMatches checks that the plane holds the inbound half of every call
// in the table and the outbound half of every established one, and nothing
// else.
func planeMatches(tab *Table, dp *fakePlane) error {
	in := map[natKey]netip.AddrPort{}
	out := map[string]bool{}
	for _, c := range tab.Calls() {
		in[natKey{c.Server, c.NATCallID}] = netip.AddrPortFrom(c.Client, c.ClientCallID)
		if c.Established {
			out[outKey(c.Client, c.Server, c.ServerCallID)] = true
		}
	}
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if !maps.Equal(in, dp.in) {
		return fmt.Errorf("inbound: plane holds %v, calls want %v", dp.in, in)
	}
	if !maps.Equal(out, dp.out) {
		return fmt.Errorf("outbound: plane holds %v, calls want %v", dp.out, out)
	}
	return nil
}

func (f *fakePlane) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// TestConcurrentSetupAndRelease sets calls up on many connections at once
// against a plane whose additions take a while (they run without the
// table's lock), while expiries and closing connections release calls in
// the middle of their set-up. Once every connection closed, the plane must
// hold nothing. Run it with -race.
func TestConcurrentSetupAndRelease(t *testing.T) {
	dp := newFakePlane()
	dp.delay = 50 * time.Microsecond
	tab := NewTable(dp, Limits{ConnsPerClient: 100, CallsPerClient: 1000, Calls: 10000}, nil)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() { // the idle check, releasing every call it sees
		for {
			select {
			case <-stop:
				return
			default:
			}
			tab.Expire(time.Nanosecond, func(CallInfo) Traffic { return Traffic{} })
			time.Sleep(100 * time.Microsecond)
		}
	})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			client := netip.AddrFrom4([4]byte{192, 168, 77, byte(10 + w%4)})
			for round := range 8 {
				s, err := tab.OpenSession(client, server)
				if err != nil {
					t.Error(err)
					return
				}
				done := make(chan struct{})
				go func() { // the server's side of the same connection
					defer close(done)
					for i := range 20 {
						m := ocrp(uint16(w*1000+round*100+i+1), uint16(i+1), OutgoingCallResultConnected)
						s.fromServer(m)
					}
				}()
				for i := range 20 {
					s.fromClient(ocrq(uint16(i + 1)))
				}
				if round%2 == 0 {
					s.Close() // while the server's replies still come
					<-done
				} else {
					<-done
					s.Close()
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	if in, out := dp.sizes(); in != 0 || out != 0 || tab.Len() != 0 {
		t.Errorf("after every connection closed: %d inbound, %d outbound, %d calls; want none", in, out, tab.Len())
	}
}
