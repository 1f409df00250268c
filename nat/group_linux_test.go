package nat

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// TestAdditionsShareBatches adds calls from many goroutines at once: each
// gets its own answer, every element is in, and the calls took fewer
// batches than additions. The first batch is held back (the Plane's lock
// taken, as a batch in flight holds it) until the other goroutines' first
// additions wait behind it: a batch now takes less time than starting a
// goroutine, so without that they might never meet.
func TestAdditionsShareBatches(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "group")
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort},
		nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	const workers, calls = 32, 8
	var wg sync.WaitGroup
	p.mu.Lock()
	for w := range workers {
		wg.Go(func() {
			client := netip.AddrFrom4([4]byte{10, 200, 1, byte(2 + w)})
			for i := range calls {
				id := uint16(w*calls + i + 1)
				if err := p.AddInbound(serverIP, id, client, id); err != nil {
					t.Errorf("AddInbound %d: %v", id, err)
				}
				if err := p.AddOutbound(client, serverIP, id); err != nil {
					t.Errorf("AddOutbound %d: %v", id, err)
				}
			}
		})
	}
	releaseWhenWaiting(t, p, workers-1)
	wg.Wait()
	v := viewTable(t, ns, DefaultTable)
	if len(v.Sets["gre_in"]) != workers*calls || len(v.Sets["gre_out"]) != workers*calls {
		t.Errorf("gre_in holds %d, gre_out %d; want %d each", len(v.Sets["gre_in"]), len(v.Sets["gre_out"]), workers*calls)
	}
	p.adds.mu.Lock()
	batches := p.adds.batches
	p.adds.mu.Unlock()
	t.Logf("%d additions in %d batches", 2*workers*calls, batches)
	if batches >= 2*workers*calls {
		t.Errorf("%d additions took %d batches; want them shared", 2*workers*calls, batches)
	}
}

// releaseWhenWaiting unlocks p.mu, which the caller took to hold the first
// batch back, once n additions wait behind it.
func releaseWhenWaiting(t *testing.T, p *Plane, n int) {
	t.Helper()
	defer p.mu.Unlock()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		p.adds.mu.Lock()
		waiting := len(p.adds.waiting)
		p.adds.mu.Unlock()
		if waiting >= n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d additions wait behind the first after 5 s; want %d", waiting, n)
		}
	}
}

// TestRefusedAdditionAlone: one addition the kernel refuses (a different
// client under a NAT call ID already mapped) fails alone; the others in
// its batch go in.
func TestRefusedAdditionAlone(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "groupno")
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort},
		nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.AddInbound(serverIP, 5, lanHostIP, 7); err != nil {
		t.Fatal(err)
	}
	in := func(natID uint16, client netip.Addr, clientID uint16) *addition {
		return &addition{Addition: Addition{Server: serverIP, NATID: natID, Client: client, ClientID: clientID}}
	}
	other := netip.MustParseAddr("10.200.1.9")
	batch := []*addition{in(6, lanHostIP, 8), in(5, other, 7), in(9, lanHostIP, 10)}
	p.sendAdditions(batch)
	if batch[0].err != nil || batch[2].err != nil {
		t.Errorf("good additions: %v, %v; want nil", batch[0].err, batch[2].err)
	}
	if !errors.Is(batch[1].err, unix.EEXIST) {
		t.Errorf("addition under a mapped key with another value: %v; want EEXIST", batch[1].err)
	}
	v := viewTable(t, ns, DefaultTable)
	if len(v.Sets["gre_in"]) != 3 {
		t.Errorf("gre_in = %v; want 5, 6 and 9", v.Sets["gre_in"])
	}
}

// TestSendQuietErrors: a batch acknowledged only at its end still reports a
// refused message, wherever it is in the batch, as its errno; the whole
// transaction is undone; and the socket stays in step, so the next batch
// gets its own answer.
func TestSendQuietErrors(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "quiet")
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort},
		nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	client := netip.AddrFrom4([4]byte{10, 200, 1, 2})
	other := netip.AddrFrom4([4]byte{10, 200, 1, 3})
	if err := p.AddInbound(serverIP, 100, client, 100); err != nil {
		t.Fatal(err)
	}
	// gre_in { server . id : client . id }, queued on the Plane's recorder.
	in := func(id uint16, c netip.Addr) {
		t.Helper()
		if err := p.queue(true, p.obj.greIn, nftables.SetElement{Key: inKey(serverIP, id), Val: inValue(c, id)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		queue func()
	}{
		{"refused first", func() { in(100, other); in(101, client); in(102, client) }},
		{"refused in the middle", func() { in(101, client); in(100, other); in(102, client) }},
		{"refused last", func() { in(101, client); in(102, client); in(100, other) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.mu.Lock()
			tc.queue()
			err := p.sendQueued()
			p.mu.Unlock()
			if !errors.Is(err, unix.EEXIST) {
				t.Fatalf("sendQueued: %v, want EEXIST", err)
			}
			if n := len(viewTable(t, ns, DefaultTable).Sets["gre_in"]); n != 1 {
				t.Fatalf("gre_in holds %d elements after a refused batch, want the 1 from before", n)
			}
			// In step: this batch's answer is its own.
			p.mu.Lock()
			in(103, client)
			err = p.sendQueued()
			p.mu.Unlock()
			if err != nil {
				t.Fatalf("the batch after: %v", err)
			}
			if err := p.DeleteInbound(serverIP, 103); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAddSeveral: Add makes several additions in one batch, and a refused
// one (a different client under a NAT call ID already mapped) fails alone,
// with its own error, while the others go in.
func TestAddSeveral(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "several")
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort},
		nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	a := netip.AddrFrom4([4]byte{10, 200, 1, 2})
	b := netip.AddrFrom4([4]byte{10, 200, 1, 3})
	adds := []Addition{
		{Server: serverIP, NATID: 1, Client: a, ClientID: 1},
		{Outbound: true, Client: a, Server: serverIP, ServerID: 1},
		{Server: serverIP, NATID: 2, Client: a, ClientID: 2},
	}
	p.adds.mu.Lock()
	before := p.adds.batches
	p.adds.mu.Unlock()
	for i, err := range p.Add(adds) {
		if err != nil {
			t.Errorf("addition %d: %v", i, err)
		}
	}
	p.adds.mu.Lock()
	if n := p.adds.batches - before; n != 1 {
		t.Errorf("3 additions took %d batches, want 1", n)
	}
	p.adds.mu.Unlock()
	errs := p.Add([]Addition{
		{Server: serverIP, NATID: 3, Client: b, ClientID: 3},
		{Server: serverIP, NATID: 1, Client: b, ClientID: 9}, // NAT call ID 1 is a's
		{Outbound: true, Client: b, Server: serverIP, ServerID: 3},
	})
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], unix.EEXIST) {
		t.Errorf("errors %v; want only the second, EEXIST", errs)
	}
	v := viewTable(t, ns, DefaultTable)
	if len(v.Sets["gre_in"]) != 3 || len(v.Sets["gre_out"]) != 2 {
		t.Errorf("gre_in holds %d, gre_out %d; want 3 and 2", len(v.Sets["gre_in"]), len(v.Sets["gre_out"]))
	}
}

// TestAdditionsBounded: additions of many callers waiting at once go in
// batches of at most maxAdditions (a caller's own never split), and all of
// them go in. The first batch is held back until all the others wait.
func TestAdditionsBounded(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "bounded")
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort},
		nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	const callers, each = 20, 50
	var wg sync.WaitGroup
	p.mu.Lock()
	for c := range callers {
		wg.Go(func() {
			client := netip.AddrFrom4([4]byte{10, 200, 2, byte(2 + c)})
			adds := make([]Addition, each)
			for i := range adds {
				id := uint16(c*each + i + 1)
				adds[i] = Addition{Server: serverIP, NATID: id, Client: client, ClientID: id}
			}
			for i, err := range p.Add(adds) {
				if err != nil {
					t.Errorf("caller %d, addition %d: %v", c, i, err)
				}
			}
		})
	}
	releaseWhenWaiting(t, p, (callers-1)*each)
	wg.Wait()
	if n := len(viewTable(t, ns, DefaultTable).Sets["gre_in"]); n != callers*each {
		t.Errorf("gre_in holds %d, want %d", n, callers*each)
	}
	p.adds.mu.Lock()
	defer p.adds.mu.Unlock()
	t.Logf("%d additions in %d batches, the largest %d", callers*each, p.adds.batches, p.adds.largest)
	if p.adds.largest > maxAdditions+each || p.adds.largest < maxAdditions {
		t.Errorf("a batch of %d additions; want from %d to %d", p.adds.largest, maxAdditions, maxAdditions+each)
	}
}
