package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// greKey names one GRE comparison of the three setups.
type greKey struct {
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
	step                     scaleStep
	conns                    int
	spread                   int // h1's calls, which spread GRE goes over
	connect, setup, teardown []time.Duration
	rssIdle                  []uint64 // before the connections
	rss                      []uint64 // after set-up
	rssHeld                  uint64   // largest seen while the calls were held
	rssMappings              uint64   // after a `pptp-alg mappings --json`, largest round
	hwm                      uint64   // peak over the rounds
	setupCPU, teardownCPU    time.Duration
	one, all                 [2]*cell // GRE by direction: the 1-call lab, then this step
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
	gre               map[greKey]*cell
	latency           [numSetups][]time.Duration
	scale             []scaleResult
	gobench           []benchLine
	gobenchErr        error

	idle         []idleResult                         // no calls, then calls held
	connect      [numSetups][numConds][]time.Duration // by setup and condition
	connectFlows [numSetups]int                       // flows tracked in the loaded condition, last fill
	concurrent   [numSetups]concurrentResult
	flush        *flushResult
}

// latencies summarises ds.
func latencies(ds []time.Duration) latencyResult {
	ds = slices.Clone(ds)
	if len(ds) == 0 {
		return latencyResult{}
	}
	slices.Sort(ds)
	return latencyResult{n: len(ds), p50: quantile(ds, 0.50), p99: quantile(ds, 0.99), max: ds[len(ds)-1]}
}

func (r *results) latencyOf(s setup) latencyResult { return latencies(r.latency[s]) }

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
	fmt.Fprintf(w, "- labs (scripts/lab): one per setup with 2 LAN hosts, and one with %d for the scale steps; "+
		"each has its hosts on a bridge, a router and a server, in network namespaces joined by veth\n\n", max(r.opt.hosts, 2))

	r.printIdle(w)
	if r.opt.has("gre") {
		r.printGRE(w)
	}
	if r.opt.has("latency") {
		r.printLatency(w)
	}
	r.printConnect(w)
	r.printConcurrent(w)
	if r.opt.has("scale") {
		r.printScale(w)
	}
	r.printFlush(w)
	r.printGoBench(w)
	r.printGoals(w)
}

func (r *results) printGRE(w io.Writer) {
	fmt.Fprintf(w, "## GRE forwarding, packets/s\n\n")
	fmt.Fprintf(w, "Each setup in a lab of its own, all three at once, each with one call from h1. One sending thread pinned "+
		"to CPU %d blasts enhanced GRE with sendmmsg; packets are counted at the receiver (pinned to CPU %d) only if they "+
		"carry the call ID the receiver must see. Per row, after one warm-up window each, %d rounds: in each round every "+
		"setup sends one %v window, in an order that rotates. Rates are medians over the rounds; ratios are the median "+
		"of the ratios within each round, interquartile range in parentheses. The last row is one UDP flow from h1, "+
		"masqueraded under fw4: what each setup costs traffic that is not PPTP. br_netfilter is off in the routers, as on OpenWrt.\n\n",
		senderCPU, receiverCPU, r.opt.reps, r.opt.duration)
	t := table{head: []string{"direction", "payload", setupRouting.String(), setupHelper.String(), setupALG.String(),
		"pptp-alg / helper", "pptp-alg / routing", "rounds kept"}}
	row := func(name, size string, c *cell) {
		if c == nil {
			return
		}
		t.add(name, size, thousands(c.rate(int(setupRouting))), thousands(c.rate(int(setupHelper))), thousands(c.rate(int(setupALG))),
			c.ratioText(int(setupALG), int(setupHelper)), c.ratioText(int(setupALG), int(setupRouting)), c.keptText())
	}
	var cells []*cell
	for _, size := range r.opt.sizes {
		for _, d := range []direction{outbound, inbound} {
			c := r.gre[greKey{d, size, false}]
			row(d.String(), fmt.Sprintf("%d B", size), c)
			cells = append(cells, c)
		}
	}
	c := r.gre[greKey{outbound, 64, true}]
	row("UDP LAN→WAN, not PPTP", "64 B", c)
	t.write(w)
	fmt.Fprintf(w, "\n%s\n", stealSummary(append(cells, c)))
}

func (r *results) printLatency(w io.Writer) {
	fmt.Fprintf(w, "\n## Call set-up latency\n\n")
	fmt.Fprintf(w, "Outgoing-Call-Request written to Outgoing-Call-Reply read, at the client in h2; sequential calls on one control "+
		"connection, each cleared (Call-Clear-Request, Call-Disconnect-Notify) before the next; a share in every round, "+
		"after 20 warm-up calls that are not counted.\n\n")
	t := table{head: []string{"setup", "calls", "p50", "p99", "max"}}
	for s := range numSetups {
		l := r.latencyOf(s)
		t.add(s.String(), strconv.Itoa(l.n), us(l.p50), us(l.p99), us(l.max))
	}
	t.write(w)
}

func (r *results) printScale(w io.Writer) {
	fmt.Fprintf(w, "\n## Scale, pptp-alg: calls\n\n")
	fmt.Fprintf(w, "Connections spread round-robin over the LAN hosts, each with its calls numbered from 1, so call IDs collide "+
		"and are translated. Calls are set up (Outgoing-Call-Request/Reply) and torn down (Call-Clear-Request/"+
		"Call-Disconnect-Notify) with %d requests per write on every connection at once, connections already open; "+
		"rates are calls over wall time, median of %d round(s) (steps of one call a connection run once, last). The daemon's RSS: "+
		"1 s after set-up (median, range: Go keeps freed heap a while, so it depends on what came before); the most "+
		"seen, every 50 ms, while the calls are held (at least 11 s from 1,000 calls: the daemon dumps its counters every 10 s); "+
		"after one `pptp-alg mappings --json` (largest round); its lifetime peak (VmHWM). CPU time from /proc/PID/stat.\n\n", r.opt.window, r.opt.scaleReps)
	t := table{head: []string{"calls", "per conn", "conns", "conns opened/s", "set-up/s", "tear-down/s", "both/s", "daemon CPU µs/call",
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
	fmt.Fprintf(w, "64-byte payload, on one call of h1 and spread round-robin over all of h1's calls, in the first round of a step. "+
		"Each figure is paired with the pptp-alg lab of the GRE section, which holds one call: the two labs take turns, %d rounds "+
		"of one %v window each, as above. A cell gives this step's median rate, then the median of the ratios to the 1-call "+
		"lab within each round, interquartile range in parentheses. The step of 1 call is the same setup in both labs: "+
		"its ratio shows how far two like labs differ.\n\n", r.opt.reps, r.opt.duration)
	t = table{head: []string{"calls", "per conn", "LAN→WAN, 1 call", "WAN→LAN, 1 call", "spread over", "LAN→WAN, spread", "WAN→LAN, spread", "rounds kept, fewest"}}
	var cells []*cell
	for _, s := range r.scale {
		if s.one[outbound] == nil {
			continue
		}
		text := func(c *cell) string {
			if c == nil {
				return "-"
			}
			return thousands(c.rate(1)) + ", " + c.ratioText(1, 0)
		}
		var fewest *cell
		for _, c := range append(s.one[:], s.all[:]...) {
			if c != nil {
				cells = append(cells, c)
				if fewest == nil || len(c.kept()) < len(fewest.kept()) {
					fewest = c
				}
			}
		}
		t.add(thousands(float64(s.step.calls)), strconv.Itoa(s.step.perConn),
			text(s.one[outbound]), text(s.one[inbound]), strconv.Itoa(s.spread),
			text(s.all[outbound]), text(s.all[inbound]), fewest.keptText())
	}
	t.write(w)
	if len(cells) > 0 {
		fmt.Fprintf(w, "\n%s\n", stealSummary(cells))
	}
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

// printGoals checks the goals of issues 4 and 12.
func (r *results) printGoals(w io.Writer) {
	fmt.Fprintf(w, "\n## Goals\n\n")
	t := table{head: []string{"goal", "measured", "met"}}

	for _, d := range []direction{outbound, inbound} {
		if !r.opt.has("gre") {
			break
		}
		var parts, verdicts []string
		for _, size := range r.opt.sizes {
			c := r.gre[greKey{d, size, false}]
			if c == nil {
				continue
			}
			v, text := c.goalText(int(setupALG), int(setupHelper), 1.0)
			parts = append(parts, fmt.Sprintf("%s at %d B", text, size))
			verdicts = append(verdicts, v)
		}
		t.add(fmt.Sprintf("GRE %v through pptp-alg ≥ 1.0x the kernel helper (median ratio, 95 %% CI)", d), strings.Join(parts, ", "), allOf(verdicts))
	}

	// The largest step that measured GRE.
	var big *scaleResult
	for i := range r.scale {
		if s := &r.scale[i]; s.step.calls > 1 && s.one[outbound] != nil && (big == nil || s.step.calls > big.step.calls) {
			big = s
		}
	}
	if big != nil {
		// The goal compares like traffic, one call's GRE, with 10,000
		// calls installed and with one. GRE spread over many calls is
		// other traffic (its calls' elements no longer all sit in cache):
		// a row of its own, against the same bar.
		for _, x := range []struct {
			row string
			c   [2]*cell
		}{
			{fmt.Sprintf("GRE rate with %s calls ≥ 0.95x with 1 call (one call's GRE; median ratio, 95 %% CI)", thousands(float64(big.step.calls))), big.one},
			{fmt.Sprintf("GRE spread over %s of %s calls ≥ 0.95x one call's GRE with 1 call (other traffic; median ratio, 95 %% CI)",
				thousands(float64(big.spread)), thousands(float64(big.step.calls))), big.all},
		} {
			var parts, verdicts []string
			for _, d := range []direction{outbound, inbound} {
				if x.c[d] == nil {
					continue
				}
				v, text := x.c[d].goalText(1, 0, 0.95)
				parts = append(parts, fmt.Sprintf("%v %s", d, text))
				verdicts = append(verdicts, v)
			}
			if len(parts) > 0 {
				t.add(x.row, strings.Join(parts, ", "), allOf(verdicts))
			}
		}
	}

	if r.opt.has("latency") {
		h, a := r.latencyOf(setupHelper), r.latencyOf(setupALG)
		t.add("call set-up p99 within 1 ms of the kernel helper's",
			fmt.Sprintf("%s vs %s (%+d µs)", us(a.p99), us(h.p99), (a.p99-h.p99).Microseconds()), yes(a.p99-h.p99 <= time.Millisecond))
	}

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
			yes(max(s.rssHeld, s.rssMappings) <= 24<<20))
	}
	for _, l := range r.gobench {
		if strings.HasPrefix(l.name, "BenchmarkRelaySteadyState") {
			t.add("no allocation per relayed control message in steady state", fmt.Sprintf("%s: %.0f allocs/op", l.name, l.allocsPerOp), yes(l.allocsPerOp == 0))
		}
	}
	r.issue12Goals(&t)
	t.write(w)
}

// allOf is "met" when every verdict is, "missed" when any is, and "not
// decided" otherwise.
func allOf(verdicts []string) string {
	switch {
	case len(verdicts) == 0:
		return "-"
	case slices.Contains(verdicts, "missed"):
		return "**missed**"
	case slices.Contains(verdicts, "not decided"):
		return "not decided"
	}
	return "met"
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

func (r *results) printIdle(w io.Writer) {
	if len(r.idle) == 0 {
		return
	}
	fmt.Fprintf(w, "## Idle cost, pptp-alg\n\n")
	fmt.Fprintf(w, "The daemon of a lab of its own (fw4 + pptp-alg), left alone for %v after %v to settle: first with no calls, then with %s calls "+
		"held (250 a connection, no traffic). Wakeups are the times its threads were put on a CPU, summed over "+
		"/proc/PID/task/*/schedstat; sockets are those it opened in the window, by netlink protocol or family, as the kernel's "+
		"sys_enter_socket and sys_enter_socketpair tracepoints record them for its threads (a tracefs instance of the bench's own, "+
		"which never stops the daemon); CPU is user and system time from /proc/PID/stat (10 ms ticks), as a share of one core.\n\n",
		r.opt.idle, min(idleSettle, r.opt.idle), thousands(float64(r.opt.idleCalls)))
	t := table{head: []string{"calls held", "window", "wakeups/s", "sockets opened", "CPU, % of a core"}}
	for _, x := range r.idle {
		t.add(thousands(float64(x.calls)), x.window.Round(time.Second).String(), fmt.Sprintf("%.2f", x.wakeupsPerSecond()),
			socketsText(x.sockets), fmt.Sprintf("%.3f", 100*x.cpuShare()))
	}
	t.write(w)
	fmt.Fprintln(w)
}

// socketsText is "0", or "146 (AF_INET 6, NETLINK_ROUTE 140)".
func socketsText(m map[string]int) string {
	n := 0
	var parts []string
	for _, f := range slices.Sorted(maps.Keys(m)) {
		n += m[f]
		parts = append(parts, fmt.Sprintf("%s %d", f, m[f]))
	}
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", n, strings.Join(parts, ", "))
}

func (r *results) printConnect(w io.Writer) {
	if len(r.connect[setupALG][condIdle]) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Control connection set-up\n\n")
	fmt.Fprintf(w, "From connect to the Outgoing-Call-Reply of the connection's first call (connect, Start-Control-Connection-Request/Reply, "+
		"Outgoing-Call-Request/Reply), at a client in h2, each connection closed before the next; the setups take turns connection by "+
		"connection, one every %v per lab (under fw4's limit of 25 new connections a second to the router), in %d rounds, each "+
		"round first on an idle router, then with %s unrelated UDP flows that h1 sent through the router (one packet from each of as many "+
		"source ports; conntrack -L counted %s in the kernel helper's router and %s in pptp-alg's), which are deleted at the end of the round.\n\n",
		connectPace, r.opt.connectRounds, thousands(float64(r.opt.connectFlows)),
		thousands(float64(r.connectFlows[setupHelper])), thousands(float64(r.connectFlows[setupALG])))
	t := table{head: []string{"setup", "connections", "p50, idle", "p99, idle", "p50, flows", "p99, flows", "p50 flows / idle"}}
	for _, s := range []setup{setupHelper, setupALG} {
		a, b := latencies(r.connect[s][condIdle]), latencies(r.connect[s][condLoaded])
		t.add(s.String(), fmt.Sprintf("%d + %d", a.n, b.n), us(a.p50), us(a.p99), us(b.p50), us(b.p99), fmt.Sprintf("%.2fx", ratio(b.p50, a.p50)))
	}
	t.write(w)
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func (r *results) printConcurrent(w io.Writer) {
	if len(r.concurrent[setupALG].rates) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Concurrent call set-up\n\n")
	fmt.Fprintf(w, "%d control connections, already open and spread over the lab's 2 LAN hosts, each write %d Outgoing-Call-Requests "+
		"in one write, all at the same moment; a call's latency runs from its connection's write to its reply. Calls a second are "+
		"all the calls over the time to the last reply, median of %d rounds; in each round the kernel helper's and pptp-alg's labs take a "+
		"turn, in an order that alternates. CPU a call is the time on a CPU from the first write to the last reply, over the calls, "+
		"median of the rounds: of the lab (the bench's clients and server, the ksoftirqd threads, the daemon; the kernel's forwarding "+
		"and the helper run in softirq within these) and of pptp-alg's daemon alone. With %d CPUs, %d calls that each cost the lab c "+
		"take at least %d × c / %d to set up.\n\n",
		r.opt.concurrentConns, r.opt.concurrentCalls, r.opt.concurrentRounds, runtime.NumCPU(),
		r.opt.concurrentConns*r.opt.concurrentCalls, r.opt.concurrentConns*r.opt.concurrentCalls, runtime.NumCPU())
	t := table{head: []string{"setup", "calls", "p50", "p99", "max", "calls/s", "lab CPU a call", "daemon CPU a call"}}
	for _, s := range []setup{setupHelper, setupALG} {
		c := r.concurrent[s]
		l := latencies(c.latency)
		daemon := "—"
		if len(c.daemonCPU) > 0 {
			daemon = microseconds(median(c.daemonCPU))
		}
		t.add(s.String(), strconv.Itoa(l.n), us(l.p50), us(l.p99), us(l.max), thousands(median(c.rates)),
			microseconds(median(c.labCPU)), daemon)
	}
	t.write(w)
}

// microseconds to a tenth.
func microseconds(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }

func (r *results) printFlush(w io.Writer) {
	f := r.flush
	if f == nil {
		return
	}
	fmt.Fprintf(w, "\n## nft flush ruleset under control traffic, pptp-alg\n\n")
	fmt.Fprintf(w, "In the scale lab, with the daemon in its default mode (NAT redirect, tables owned by its netlink socket), "+
		"%d control connections with one call each send Echo-Requests every %v and read the replies; "+
		"meanwhile the router runs `nft flush ruleset` %d times, each once nft lists the daemon's table again and %v have passed. "+
		"A connection counts as reset if a write or read fails or a reply takes over %v; a call counts as lost if the daemon "+
		"no longer lists it or the kernel lacks one of its GRE mappings afterwards.\n\n", f.conns, echoEvery, f.flushes, flushGap, ioTimeout)
	t := table{head: []string{"flushes", "connections reset", "calls lost", "Echo exchanges", "table back after, longest"}}
	t.add(strconv.Itoa(f.flushes), fmt.Sprintf("%d of %d", f.reset, f.conns), fmt.Sprintf("%d of %d", f.callsLost, f.calls),
		thousands(float64(f.echoes)), f.restore.Round(time.Millisecond).String())
	t.write(w)
	if f.firstErr != "" {
		fmt.Fprintf(w, "\nFirst failure: %s\n", f.firstErr)
	}
}

// issue12Goals adds the goals of issue 12 that this run measured.
func (r *results) issue12Goals(t *table) {
	if len(r.idle) > 0 {
		x := r.idle[0]
		t.add(fmt.Sprintf("idle, no calls, %v: at most 1 wakeup a second on average", x.window.Round(time.Second)),
			fmt.Sprintf("%.2f/s", x.wakeupsPerSecond()), yes(x.wakeupsPerSecond() <= 1))
		t.add("idle, no calls: no socket opened", socketsText(x.sockets), yes(x.socketCount() == 0))
		t.add("idle, no calls: CPU under 0.05 % of a core", fmt.Sprintf("%.3f %%", 100*x.cpuShare()), yes(x.cpuShare() < 0.0005))
	}
	if len(r.connect[setupALG][condIdle]) > 0 {
		h, a := latencies(r.connect[setupHelper][condIdle]), latencies(r.connect[setupALG][condIdle])
		t.add("control connection set-up p50 within 1 ms of the kernel helper's (idle router)",
			fmt.Sprintf("%s vs %s (%+d µs)", us(a.p50), us(h.p50), (a.p50-h.p50).Microseconds()), yes(a.p50-h.p50 <= time.Millisecond))
		l := latencies(r.connect[setupALG][condLoaded])
		t.add(fmt.Sprintf("control connection set-up p50 with %s unrelated flows within 10 %% of without", thousands(float64(r.opt.connectFlows))),
			fmt.Sprintf("%s vs %s (%.2fx)", us(l.p50), us(a.p50), ratio(l.p50, a.p50)), yes(float64(l.p50) <= 1.1*float64(a.p50)))
	}
	if len(r.concurrent[setupALG].rates) > 0 {
		h, a := r.concurrent[setupHelper], r.concurrent[setupALG]
		hl, al := latencies(h.latency), latencies(a.latency)
		what := fmt.Sprintf("%d connections × %d calls at once", r.opt.concurrentConns, r.opt.concurrentCalls)
		t.add(what+": p99 within 1 ms of the kernel helper's",
			fmt.Sprintf("%s vs %s (%+d µs)", us(al.p99), us(hl.p99), (al.p99-hl.p99).Microseconds()), yes(al.p99-hl.p99 <= time.Millisecond))
		t.add(what+": at least the kernel helper's calls/s",
			fmt.Sprintf("%s/s vs %s/s", thousands(median(a.rates)), thousands(median(h.rates))), yes(median(a.rates) >= median(h.rates)))
	}
	if f := r.flush; f != nil {
		t.add(fmt.Sprintf("%d × nft flush ruleset under traffic on %d control connections: none reset, no call lost", f.flushes, f.conns),
			fmt.Sprintf("%d reset, %d lost", f.reset, f.callsLost), yes(f.reset == 0 && f.callsLost == 0))
	}
}
