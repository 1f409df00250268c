package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type sample struct {
	median float64
	all    []float64
}

// String is the median and the half-range of the samples in percent.
func (s sample) String() string {
	if len(s.all) == 0 {
		return "-"
	}
	lo, hi := s.all[0], s.all[0]
	for _, x := range s.all {
		lo, hi = min(lo, x), max(hi, x)
	}
	if len(s.all) == 1 || s.median == 0 {
		return thousands(s.median)
	}
	return fmt.Sprintf("%s ±%.0f%%", thousands(s.median), (hi-lo)/2/s.median*100)
}

// greKey names one GRE measurement.
type greKey struct {
	setup   setup
	dir     direction
	payload int
	udp     bool // the UDP flow instead of GRE
}

type latencyResult struct {
	n             int
	p50, p99, max time.Duration
}

// scaleResult is one scale step over its rounds.
type scaleResult struct {
	step                          scaleStep
	conns                         int
	spread                        int // h1's calls, which spread GRE goes over
	connect, setup, teardown      []time.Duration
	rssIdle                       []uint64 // before the connections
	rss                           []uint64 // after set-up
	rssHeld                       uint64   // largest seen while the calls were held
	rssMappings                   uint64   // after a `pptp-alg mappings --json`, largest round
	hwm                           uint64   // peak over the rounds
	setupCPU, teardownCPU, greCPU time.Duration
	one, all                      [2]sample // GRE by direction
}

func (r scaleResult) rounds() int { return len(r.setup) }

// rate is the median over rounds of calls per second.
func (r scaleResult) rate(ds ...[]time.Duration) float64 {
	var qs []float64
	for i := range r.rounds() {
		var t time.Duration
		for _, d := range ds {
			t += d[i]
		}
		qs = append(qs, float64(r.step.calls)/t.Seconds())
	}
	if len(qs) == 0 {
		return 0
	}
	return median(qs)
}

func (r scaleResult) setupRate() float64    { return r.rate(r.setup) }
func (r scaleResult) teardownRate() float64 { return r.rate(r.teardown) }
func (r scaleResult) cycleRate() float64    { return r.rate(r.setup, r.teardown) }

// rssText is the median RSS after set-up, and the range over rounds.
func (r scaleResult) rssText() string {
	if len(r.rss) == 0 {
		return "-"
	}
	xs := make([]float64, len(r.rss))
	for i, x := range r.rss {
		xs[i] = float64(x)
	}
	if len(xs) == 1 {
		return mib(r.rss[0])
	}
	return fmt.Sprintf("%s (%s–%s)", mib(uint64(median(xs))), mib(uint64(slices.Min(xs))), mib(uint64(slices.Max(xs))))
}

// cpuPerCall is the daemon's CPU time per call set up and torn down.
func (r scaleResult) cpuPerCall() time.Duration {
	n := r.rounds() * r.step.calls
	if n == 0 {
		return 0
	}
	return (r.setupCPU + r.teardownCPU) / time.Duration(n)
}

type benchLine struct {
	pkg, name                    string
	nsPerOp, bPerOp, allocsPerOp float64
	extra                        string // other metrics
}

type results struct {
	opt               options
	command           string
	started, finished time.Time
	gre               map[greKey]*sample
	latency           [numSetups][]time.Duration
	scale             []scaleResult
	gobench           []benchLine
	gobenchErr        error
}

func (r *results) greOf(s setup, d direction, payload int) sample {
	if x := r.gre[greKey{s, d, payload, false}]; x != nil {
		return *x
	}
	return sample{}
}

func (r *results) udpOf(s setup) sample {
	if x := r.gre[greKey{s, outbound, 64, true}]; x != nil {
		return *x
	}
	return sample{}
}

func (r *results) addGRE(k greKey, pps float64) {
	if r.gre == nil {
		r.gre = map[greKey]*sample{}
	}
	x := r.gre[k]
	if x == nil {
		x = new(sample)
		r.gre[k] = x
	}
	x.all = append(x.all, pps)
	x.median = median(x.all)
}

func (r *results) latencyOf(s setup) latencyResult {
	ds := slices.Clone(r.latency[s])
	if len(ds) == 0 {
		return latencyResult{}
	}
	slices.Sort(ds)
	return latencyResult{n: len(ds), p50: quantile(ds, 0.50), p99: quantile(ds, 0.99), max: ds[len(ds)-1]}
}

func (r *results) scaleOf(calls, perConn int) *scaleResult {
	for i := range r.scale {
		if s := &r.scale[i]; s.step.calls == calls && (perConn == 0 || s.step.perConn == perConn) {
			return s
		}
	}
	return nil
}

func (r *results) print(w io.Writer) {
	fmt.Fprintf(w, "# pptp-alg benchmark\n\n")
	fmt.Fprintf(w, "- date: %s (took %s)\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.finished.Sub(r.started).Round(time.Second))
	fmt.Fprintf(w, "- machine: %d CPUs (%s), kernel %s, Go %s\n", runtime.NumCPU(), cpuModel(), kernel(), runtime.Version())
	fmt.Fprintf(w, "- command: `%s`\n", strings.TrimSpace(r.command))
	fmt.Fprintf(w, "- lab: %d LAN hosts on a bridge, router and server in network namespaces joined by veth (scripts/lab)\n\n", max(r.opt.hosts, 2))

	fmt.Fprintf(w, "## GRE forwarding, packets/s\n\n")
	fmt.Fprintf(w, "One call from h1; one sending thread pinned to CPU %d blasts enhanced GRE with sendmmsg for %v; "+
		"packets are counted at the receiver (pinned to CPU %d) only if they carry the call ID the receiver must see. "+
		"The three setups take turns, %d round(s); median, ± half the range. Ratios are the median of the ratios within each round "+
		"(range in parentheses), since neighbours in time share the machine's background load. The last row is one UDP "+
		"flow from h1, masqueraded under fw4: what each setup costs traffic that is not PPTP. br_netfilter is off in "+
		"the router, as on OpenWrt.\n\n", senderCPU, r.opt.duration, receiverCPU, r.opt.reps)
	t := table{head: []string{"direction", "payload", setupRouting.String(), setupHelper.String(), setupALG.String(), "pptp-alg / helper", "pptp-alg / routing"}}
	for _, size := range r.opt.sizes {
		for _, d := range []direction{outbound, inbound} {
			rt, h, a := r.greOf(setupRouting, d, size), r.greOf(setupHelper, d, size), r.greOf(setupALG, d, size)
			t.add(d.String(), fmt.Sprintf("%d B", size), rt.String(), h.String(), a.String(), pairedRatio(a, h), pairedRatio(a, rt))
		}
	}
	rt, h, a := r.udpOf(setupRouting), r.udpOf(setupHelper), r.udpOf(setupALG)
	if len(a.all) > 0 {
		t.add("UDP LAN→WAN, not PPTP", "64 B", rt.String(), h.String(), a.String(), pairedRatio(a, h), pairedRatio(a, rt))
	}
	t.write(w)

	fmt.Fprintf(w, "\n## Call set-up latency\n\n")
	fmt.Fprintf(w, "Outgoing-Call-Request written to Outgoing-Call-Reply read, at the client in h2; sequential calls on one control "+
		"connection, each cleared (Call-Clear-Request, Call-Disconnect-Notify) before the next; a share in every round, "+
		"after 20 warm-up calls that are not counted.\n\n")
	t = table{head: []string{"setup", "calls", "p50", "p99", "max"}}
	for s := range numSetups {
		l := r.latencyOf(s)
		t.add(s.String(), strconv.Itoa(l.n), us(l.p50), us(l.p99), us(l.max))
	}
	t.write(w)

	fmt.Fprintf(w, "\n## Scale, pptp-alg: calls\n\n")
	fmt.Fprintf(w, "Connections spread round-robin over the LAN hosts, each with its calls numbered from 1, so call IDs collide "+
		"and are translated. Calls are set up (Outgoing-Call-Request/Reply) and torn down (Call-Clear-Request/"+
		"Call-Disconnect-Notify) with %d requests per write on every connection at once, connections already open; "+
		"rates are calls over wall time, median of %d round(s) (steps of one call a connection run once, last). The daemon's RSS: "+
		"1 s after set-up (median, range: Go keeps freed heap a while, so it depends on what came before); the most "+
		"seen, every 50 ms, while the calls are held (at least 11 s from 1,000 calls: the daemon dumps its counters every 10 s); "+
		"after one `pptp-alg mappings --json` (largest round); its lifetime peak (VmHWM). CPU time from /proc/PID/stat.\n\n", r.opt.window, r.opt.scaleReps)
	t = table{head: []string{"calls", "per conn", "conns", "conns opened/s", "set-up/s", "tear-down/s", "both/s", "daemon CPU µs/call",
		"RSS MiB", "held, max", "after mappings", "peak"}}
	for _, s := range r.scale {
		cpu := "-"
		if s.step.calls >= 100 {
			cpu = strconv.FormatInt(s.cpuPerCall().Microseconds(), 10)
		}
		var cps []float64
		for _, d := range s.connect {
			cps = append(cps, float64(s.conns)/d.Seconds())
		}
		connRate := "-"
		if s.conns > 1 && len(cps) > 0 {
			connRate = thousands(median(cps))
		}
		rates := []string{thousands(s.setupRate()), thousands(s.teardownRate()), thousands(s.cycleRate())}
		if s.step.calls < 100 {
			rates = []string{"-", "-", "-"} // one exchange, not a rate
		}
		t.add(thousands(float64(s.step.calls)), strconv.Itoa(s.step.perConn), strconv.Itoa(s.conns), connRate,
			rates[0], rates[1], rates[2], cpu,
			s.rssText(), mib(s.rssHeld), mib(s.rssMappings), mib(s.hwm))
	}
	t.write(w)
	// What a connection costs: RSS after set-up over RSS before the
	// connections, in the step with the most connections of one call.
	for _, s := range r.scale {
		if s.step.perConn == 1 && s.conns >= 100 && len(s.rss) > 0 {
			per := (float64(s.rss[0]) - float64(s.rssIdle[0])) / float64(s.conns)
			fmt.Fprintf(w, "\nA relayed control connection with one call costs the daemon about %.0f KiB of RSS "+
				"(%d connections: %s MiB before they opened, %s MiB with their calls up).\n", per/1024, s.conns, mib(s.rssIdle[0]), mib(s.rss[0]))
			break
		}
	}

	fmt.Fprintf(w, "\n## Scale, pptp-alg: GRE packets/s with every call installed\n\n")
	fmt.Fprintf(w, "64-byte payload, as above, on one call of h1 and spread round-robin over all of h1's calls; ratios to the "+
		"1-call step in the same round (median, range).\n\n")
	t = table{head: []string{"calls", "per conn", "LAN→WAN, 1 call", "WAN→LAN, 1 call", "spread over", "LAN→WAN, spread", "WAN→LAN, spread"}}
	base := r.scaleOf(1, 0)
	for _, s := range r.scale {
		if len(s.one[0].all) == 0 {
			continue
		}
		cell := func(x sample, d direction) string {
			if base == nil || s.step.calls == 1 {
				return x.String()
			}
			return thousands(x.median) + ", " + pairedRatio(x, base.one[d])
		}
		t.add(thousands(float64(s.step.calls)), strconv.Itoa(s.step.perConn),
			cell(s.one[outbound], outbound), cell(s.one[inbound], inbound), strconv.Itoa(s.spread),
			cell(s.all[outbound], outbound), cell(s.all[inbound], inbound))
	}
	t.write(w)

	r.printGoBench(w)
	r.printGoals(w)
}

func (r *results) printGoBench(w io.Writer) {
	fmt.Fprintf(w, "\n## Go benchmarks\n\n")
	if !r.opt.goBench {
		fmt.Fprintf(w, "Not run (-gobench=false, or -smoke).\n")
		return
	}
	if r.gobenchErr != nil {
		fmt.Fprintf(w, "go test -bench failed: %v\n", r.gobenchErr)
		return
	}
	fmt.Fprintf(w, "`go test -run '^$' -bench . -benchmem ./alg ./nat` (nat needs root: it works in a namespace of its own).\n\n")
	t := table{head: []string{"package", "benchmark", "ns/op", "B/op", "allocs/op", "other"}}
	for _, l := range r.gobench {
		t.add(l.pkg, l.name, fmt.Sprintf("%.0f", l.nsPerOp), fmt.Sprintf("%.0f", l.bPerOp), fmt.Sprintf("%.0f", l.allocsPerOp), l.extra)
	}
	t.write(w)
}

// printGoals checks the goals of issue 4.
func (r *results) printGoals(w io.Writer) {
	fmt.Fprintf(w, "\n## Goals\n\n")
	t := table{head: []string{"goal", "measured", "met"}}

	for _, d := range []direction{outbound, inbound} {
		var parts []string
		ok := true
		for _, size := range r.opt.sizes {
			q := pairedQ(r.greOf(setupALG, d, size), r.greOf(setupHelper, d, size))
			parts = append(parts, fmt.Sprintf("%.2fx at %d B", q, size))
			ok = ok && q >= 1
		}
		t.add(fmt.Sprintf("GRE %v through pptp-alg ≥ 1.0x the kernel helper", d), strings.Join(parts, ", "), yes(ok))
	}

	// The largest step that measured GRE.
	var big *scaleResult
	for i := range r.scale {
		if s := &r.scale[i]; s.step.calls > 1 && len(s.one[0].all) > 0 && (big == nil || s.step.calls > big.step.calls) {
			big = s
		}
	}
	if base := r.scaleOf(1, 0); base != nil && big != nil {
		var parts []string
		ok := true
		for _, d := range []direction{outbound, inbound} {
			for _, x := range []struct {
				name string
				s    sample
			}{{"1 call", big.one[d]}, {"spread", big.all[d]}} {
				q := pairedQ(x.s, base.one[d])
				parts = append(parts, fmt.Sprintf("%v %s %.2fx", d, x.name, q))
				ok = ok && q >= 0.95
			}
		}
		t.add(fmt.Sprintf("GRE rate with %s calls ≥ 0.95x with 1 call", thousands(float64(big.step.calls))), strings.Join(parts, ", "), yes(ok))
	}

	h, a := r.latencyOf(setupHelper), r.latencyOf(setupALG)
	t.add("call set-up p99 within 1 ms of the kernel helper's",
		fmt.Sprintf("%s vs %s (%+d µs)", us(a.p99), us(h.p99), (a.p99-h.p99).Microseconds()), yes(a.p99-h.p99 <= time.Millisecond))

	for _, s := range r.scale {
		if s.step.calls < 1000 {
			continue
		}
		t.add(fmt.Sprintf("≥ 2,000 calls/s set up and torn down (%s calls, %d per conn)", thousands(float64(s.step.calls)), s.step.perConn),
			fmt.Sprintf("%s/s (set-up %s/s, tear-down %s/s)", thousands(s.cycleRate()), thousands(s.setupRate()), thousands(s.teardownRate())),
			yes(s.cycleRate() >= 2000))
	}
	for _, s := range r.scale {
		if s.step.calls < 10000 {
			continue
		}
		t.add(fmt.Sprintf("daemon ≤ 24 MiB RSS with 10,000 calls (%d per conn)", s.step.perConn),
			fmt.Sprintf("%s MiB after set-up, %s MiB at most while held, %s MiB after `mappings`", s.rssText(), mib(s.rssHeld), mib(s.rssMappings)),
			yes(s.rssHeld <= 24<<20))
	}
	for _, l := range r.gobench {
		if strings.HasPrefix(l.name, "BenchmarkRelaySteadyState") {
			t.add("no allocation per relayed control message in steady state", fmt.Sprintf("%s: %.0f allocs/op", l.name, l.allocsPerOp), yes(l.allocsPerOp == 0))
		}
	}
	t.write(w)
}

// pairedQ is the median over rounds of a's sample over b's in the same
// round: neighbours in time share the machine's background load, which
// moves single samples by more than the setups differ.
func pairedQ(a, b sample) float64 {
	var qs []float64
	for i := range min(len(a.all), len(b.all)) {
		if b.all[i] > 0 {
			qs = append(qs, a.all[i]/b.all[i])
		}
	}
	if len(qs) == 0 {
		return 0
	}
	return median(qs)
}

// pairedRatio formats pairedQ with the range of the per-round ratios.
func pairedRatio(a, b sample) string {
	n := min(len(a.all), len(b.all))
	if n == 0 {
		return "-"
	}
	lo, hi := a.all[0]/b.all[0], a.all[0]/b.all[0]
	for i := range n {
		q := a.all[i] / b.all[i]
		lo, hi = min(lo, q), max(hi, q)
	}
	if n == 1 {
		return fmt.Sprintf("%.2fx", lo)
	}
	return fmt.Sprintf("%.2fx (%.2f–%.2f)", pairedQ(a, b), lo, hi)
}

func yes(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func us(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }

func mib(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// thousands formats x rounded, with commas.
func thousands(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// table is a Markdown table with aligned columns.
type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	width := make([]int, len(t.head))
	for _, row := range append([][]string{t.head}, t.rows...) {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + c + strings.Repeat(" ", width[i]-len([]rune(c))) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(t.head)
	sep := make([]string, len(t.head))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, row := range t.rows {
		line(row)
	}
}
