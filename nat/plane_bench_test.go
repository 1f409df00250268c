//go:build linux

package nat

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
)

// Benchmarks of the data plane as the daemon drives it under load. Each
// works in a namespace of its own (root); see BenchmarkAddDeleteCall.

// openBenchPlane opens a Plane in a fresh namespace with calls calls
// installed both ways, from LAN hosts 10.200.x.y to serverIP, call i with
// NAT and server call ID i+1. Tests use it too.
func openBenchPlane(b testing.TB, calls int) *Plane {
	b.Helper()
	requireKernel(b)
	ns := newNetNS(b, "bench")
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort},
		nftables.WithNetNSFd(ns.fd))
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { p.Close() })
	for i := range calls {
		addCall(b, p, benchClient(i), uint16(i%60000+1), uint16(i+1))
	}
	return p
}

// addCall installs a call both ways as the daemon does; the NAT and the
// server's call ID are the same number here.
func addCall(b testing.TB, p *Plane, client netip.Addr, clientID, id uint16) {
	b.Helper()
	if err := p.AddInbound(serverIP, id, client, clientID); err != nil {
		b.Fatal(err)
	}
	if err := p.AddOutbound(client, serverIP, id); err != nil {
		b.Fatal(err)
	}
}

// deleteCall removes what addCall installed.
func deleteCall(b *testing.B, p *Plane, client netip.Addr, id uint16) {
	b.Helper()
	if err := p.DeleteInbound(serverIP, id); err != nil {
		b.Fatal(err)
	}
	if err := p.DeleteOutbound(client, serverIP, id); err != nil {
		b.Fatal(err)
	}
}

// benchClient spreads calls over LAN hosts, 250 calls each.
func benchClient(i int) netip.Addr {
	h := i/250 + 2
	return netip.AddrFrom4([4]byte{10, 200, byte(h >> 8), byte(h)})
}

// BenchmarkCallSetupLatency times what the relay waits for while a client's
// Outgoing-Call-Request and the server's reply pass: AddInbound, then
// AddOutbound, one batch each. It reports the distribution, since a call's
// set-up latency is the sum of its own two batches; the deletes of the
// previous call run outside the timer.
func BenchmarkCallSetupLatency(b *testing.B) {
	timeCallSetups(b, openBenchPlane(b, 0))
}

// timeCallSetups adds a call per op on p and reports the distribution of
// the additions' times; each call is deleted outside the timer.
func timeCallSetups(b *testing.B, p *Plane) {
	var ds []time.Duration
	var i uint16
	b.ReportAllocs()
	for b.Loop() {
		i = i%60000 + 1
		start := time.Now()
		addCall(b, p, lanHostIP, i, i)
		ds = append(ds, time.Since(start))
		b.StopTimer()
		deleteCall(b, p, lanHostIP, i)
		b.StartTimer()
	}
	reportQuantiles(b, ds)
}

// BenchmarkAddDeleteCallFullTable is BenchmarkAddDeleteCall with 10,000
// calls already installed: the hash sets must not slow down as they fill.
func BenchmarkAddDeleteCallFullTable(b *testing.B) {
	p := openBenchPlane(b, 10000)
	var i uint16
	b.ReportAllocs()
	for b.Loop() {
		i = i%5000 + 1
		id := 60000 + i // above the installed calls' IDs
		addCall(b, p, lanHostIP, i, id)
		deleteCall(b, p, lanHostIP, id)
	}
}

// BenchmarkCounters10000 dumps the counters of 10,000 calls, what the
// daemon does every idle check (into the same maps each time) and for each
// `pptp-alg mappings`.
func BenchmarkCounters10000(b *testing.B) {
	p := openBenchPlane(b, 10000)
	in, out := map[InKey]Counter{}, map[OutKey]Counter{}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Counters(in, out); err != nil {
			b.Fatal(err)
		}
		if len(in) != 10000 || len(out) != 10000 {
			b.Fatalf("Counters: %d in, %d out; want 10000 each", len(in), len(out))
		}
	}
}

// reportQuantiles adds the median, 99th percentile and maximum of ds.
func reportQuantiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	q := func(f float64) float64 {
		return float64(ds[min(len(ds)-1, int(f*float64(len(ds))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(ds[len(ds)-1].Nanoseconds())/1e3, "max-µs")
}

// BenchmarkCallSetupLatencyWatched is BenchmarkCallSetupLatency with the
// daemon's ruleset watch subscribed: the kernel then builds a notification
// for each element and transaction, which the watch's socket filter drops.
func BenchmarkCallSetupLatencyWatched(b *testing.B) {
	p := openBenchPlane(b, 0)
	w, err := WatchRuleset(p.dump.netns, DefaultTable)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	timeCallSetups(b, p)
}

// BenchmarkConcurrentCallSetup sets up 100 calls at once, each from a
// goroutine of its own, as 100 control connections do when their requests
// arrive together: ns/op is the time until the last call's two additions
// are in. The calls are deleted outside the timer.
func BenchmarkConcurrentCallSetup(b *testing.B) {
	p := openBenchPlane(b, 0)
	const calls = 100
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for i := range calls {
			wg.Go(func() { addCall(b, p, benchClient(i*250), uint16(i+1), uint16(i+1)) })
		}
		wg.Wait()
		b.StopTimer()
		for i := range calls {
			deleteCall(b, p, benchClient(i*250), uint16(i+1))
		}
		b.StartTimer()
	}
}
