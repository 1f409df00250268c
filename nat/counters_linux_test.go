package nat

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// TestCountersMatchKernel sends GRE through the router for some of 2,000
// calls (enough for each dump to take several reads) and checks that
// Counters reads what was sent, and what google/nftables' GetSetElements
// reads from the same sets.
func TestCountersMatchKernel(t *testing.T) {
	requireKernel(t)
	r := newRouter(t)
	p := r.openPlane(t)
	const calls = 2000
	wantIn, wantOut := map[InKey]Counter{}, map[OutKey]Counter{}
	for i := range calls {
		id := uint16(i + 1) // the NAT, client and server call ID alike
		if err := p.AddInbound(serverIP, id, lanHostIP, id); err != nil {
			t.Fatal(err)
		}
		if err := p.AddOutbound(lanHostIP, serverIP, id); err != nil {
			t.Fatal(err)
		}
		wantIn[InKey{serverIP, id}] = Counter{}
		wantOut[OutKey{lanHostIP, serverIP, id}] = Counter{}
	}

	// Some calls carry traffic one way or both, a few packets of differing
	// sizes each.
	lanGRE := openRaw(t, r.lan, unix.IPPROTO_GRE)
	srvGRE := openRaw(t, r.server, unix.IPPROTO_GRE)
	sent := map[*rawSocket]int{}
	send := func(from, to *rawSocket, dst netip.Addr, id uint16, n int) Counter {
		var c Counter
		for k := range n {
			b := greV1(id, uint32(k), strings.Repeat("x", int(id)%50+k))
			from.send(t, dst.As4(), b)
			c.Packets++
			c.Bytes += uint64(20 + len(b))
		}
		sent[to] += n
		return c
	}
	for _, id := range []uint16{1, 2, 77, 1000, 1999, 2000} {
		if id != 2 {
			wantIn[InKey{serverIP, id}] = send(srvGRE, lanGRE, wanAddr, id, int(id)%4+1)
		}
		if id != 77 {
			wantOut[OutKey{lanHostIP, serverIP, id}] = send(lanGRE, srvGRE, serverIP, id, int(id)%3+1)
		}
	}
	// Every packet has passed the router once it has arrived.
	for s, n := range sent {
		for range n {
			if _, err := s.recv(2 * time.Second); err != nil {
				t.Fatalf("%d packets sent, not all arrived: %v", n, err)
			}
		}
	}

	in, out := map[InKey]Counter{}, map[OutKey]Counter{}
	if err := p.Counters(in, out); err != nil {
		t.Fatalf("Counters: %v", err)
	}
	if diff := cmp.Diff(wantIn, in); diff != "" {
		t.Errorf("Counters in, against what was sent (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantOut, out); diff != "" {
		t.Errorf("Counters out, against what was sent (-want +got):\n%s", diff)
	}

	c, err := nftables.New(nftables.WithNetNSFd(r.rtr.fd))
	if err != nil {
		t.Fatal(err)
	}
	kin, kout := map[InKey]Counter{}, map[OutKey]Counter{}
	els, err := c.GetSetElements(p.obj.greIn)
	if err != nil {
		t.Fatalf("GetSetElements %s: %v", mapGREIn, err)
	}
	for _, e := range els {
		kin[InKey{netip.AddrFrom4([4]byte(e.Key[0:4])), binary.BigEndian.Uint16(e.Key[4:6])}] = nftCounter(t, e)
	}
	if els, err = c.GetSetElements(p.obj.greOut); err != nil {
		t.Fatalf("GetSetElements %s: %v", setGREOut, err)
	}
	for _, e := range els {
		k := OutKey{netip.AddrFrom4([4]byte(e.Key[0:4])), netip.AddrFrom4([4]byte(e.Key[4:8])), binary.BigEndian.Uint16(e.Key[8:10])}
		kout[k] = nftCounter(t, e)
	}
	if diff := cmp.Diff(kin, in); diff != "" {
		t.Errorf("Counters in, against GetSetElements (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(kout, out); diff != "" {
		t.Errorf("Counters out, against GetSetElements (-want +got):\n%s", diff)
	}

	// The maps are refilled, not added to.
	if err := p.DeleteInbound(serverIP, 1); err != nil {
		t.Fatal(err)
	}
	delete(wantIn, InKey{serverIP, 1})
	if err := p.Counters(in, out); err != nil {
		t.Fatalf("Counters again: %v", err)
	}
	if diff := cmp.Diff(wantIn, in); diff != "" {
		t.Errorf("Counters in, second reading (-want +got):\n%s", diff)
	}

	// Without the table: the kernel's errno, and empty maps.
	r.rtr.exec(t, "nft", "delete table ip pptp_alg")
	if err := p.Counters(in, out); !errors.Is(err, unix.ENOENT) || len(in)+len(out) != 0 {
		t.Errorf("Counters without the table: %v, %d and %d elements; want ENOENT and none", err, len(in), len(out))
	}
}

func nftCounter(t *testing.T, e nftables.SetElement) Counter {
	t.Helper()
	if e.Counter == nil {
		t.Fatalf("GetSetElements: element % x without a counter", e.Key)
	}
	return Counter{e.Counter.Packets, e.Counter.Bytes}
}

// TestCountersInterrupted changes gre_in from another socket while Counters
// reads: a dump that a change crossed must fail, and every other must be
// whole.
func TestCountersInterrupted(t *testing.T) {
	p := openBenchPlane(t, 2000)
	const churn = 50
	c, err := nftables.New(nftables.WithNetNSFd(p.conn.NetNS), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseLasting() })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		// Elements spread over the hash table, so that some come before
		// where a dump resumes.
		var el []nftables.SetElement
		for id := range uint16(churn) {
			el = append(el, nftables.SetElement{Key: inKey(serverIP, 60001+id), Val: inValue(lanHostIP, 1)})
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.SetAddElements(p.obj.greIn, el)
			if err := c.Flush(); err != nil {
				t.Errorf("add: %v", err)
				return
			}
			c.SetDeleteElements(p.obj.greIn, el)
			if err := c.Flush(); err != nil {
				t.Errorf("delete: %v", err)
				return
			}
			time.Sleep(time.Millisecond) // let some dumps pass whole
		}
	})
	defer wg.Wait()
	defer close(stop)

	in, out := map[InKey]Counter{}, map[OutKey]Counter{}
	interrupted, whole := 0, 0
	for deadline := time.Now().Add(10 * time.Second); (interrupted < 3 || whole < 3) && time.Now().Before(deadline); {
		err := p.Counters(in, out)
		if errors.Is(err, errDumpInterrupted) {
			interrupted++
			if len(in)+len(out) != 0 {
				t.Fatalf("interrupted Counters left %d and %d elements", len(in), len(out))
			}
			continue
		}
		if err != nil {
			t.Fatalf("Counters: %v", err)
		}
		whole++
		for id := range uint16(churn) {
			delete(in, InKey{serverIP, 60001 + id}) // there or not
		}
		if len(in) != 2000 || len(out) != 2000 {
			t.Fatalf("Counters read %d and %d elements while the set changed, want 2000 each", len(in), len(out))
		}
		for i := range 2000 {
			if _, ok := in[InKey{serverIP, uint16(i + 1)}]; !ok {
				t.Fatalf("Counters lacks call %d while the set changed", i+1)
			}
		}
	}
	t.Logf("%d dumps interrupted, %d whole", interrupted, whole)
	if interrupted == 0 {
		t.Errorf("no dump was interrupted by a change")
	}
}
