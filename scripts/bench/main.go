// Command bench measures pptp-alg against its anchors, each in a lab of its
// own (see scripts/lab): plain routing with no NAT, stock fw4 with the
// kernel's PPTP helpers (nf_conntrack_pptp, nf_nat_pptp), and fw4 with
// pptp-alg. The labs run at once and take turns sending short windows of
// GRE, so that a comparison is made within moments of each other. It
// measures GRE forwarding (RFC 2637 section 4) in packets per second, call
// set-up latency (Outgoing-Call-Request to Outgoing-Call-Reply, section
// 2.7-2.8), and pptp-alg with thousands of calls: set-up and tear-down
// rates, GRE rate, and the daemon's memory and CPU; and, for issue 12, what
// the idle daemon costs (wakeups, sockets, CPU), how long a new control
// connection takes with and without many unrelated conntrack entries, many
// connections setting up calls at once, and `nft flush ruleset` under
// control traffic. It prints tables with ratios and the goals of issues 4
// and 12, met or missed. -only and -skip choose the sections.
//
// Usage, as root: go run ./scripts/bench [-smoke] [flags]
//
// Everything runs in namespaces the bench creates and removes. The load
// generators (GRE blaster and receivers, a PAC and a PNS) run in this
// process, on sockets opened inside the labs' namespaces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	duration     time.Duration
	reps         int
	scaleReps    int
	sizes        []int
	latencyCalls int
	scale        []scaleStep
	hosts        int
	window       int
	profile      string
	routerNft    string
	goBench      bool
	boost        bool // raise the scheduling priority (not for -smoke)
	verbose      bool

	sections map[string]bool // which sections run

	idle      time.Duration // each idle window
	idleCalls int           // calls held in the second

	connectConns  int // connections timed per setup and condition
	connectRounds int // rounds the conditions take turns in
	connectFlows  int // unrelated conntrack entries in the loaded condition

	concurrentConns, concurrentCalls, concurrentRounds int

	flushes, flushConns int
}

// sectionNames are the parts of a run, in the order they run.
var sectionNames = []string{"idle", "gre", "latency", "connect", "concurrent", "scale", "flush"}

// has says whether section s runs.
func (o options) has(s string) bool { return o.sections[s] }

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{boost: true}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "tiny counts and short windows, no Go benchmarks, unless a flag says otherwise: checks the command works (seconds, not minutes)")
	fs.DurationVar(&o.duration, "duration", 250*time.Millisecond, "length of one GRE sending window; each round sends one through every setup compared")
	fs.IntVar(&o.reps, "reps", 60, "rounds of each GRE comparison: every round sends one window through each setup compared, "+
		"in an order that rotates, after one warm-up window each; call set-up latency is taken in as many shares")
	fs.IntVar(&o.scaleReps, "scale-reps", 3, "rounds of the scale steps' set-up and tear-down (their GRE is measured in the first, over -reps rounds)")
	sizes := fs.String("sizes", "64,1400", "GRE payload `bytes`, comma-separated")
	fs.IntVar(&o.latencyCalls, "latency-calls", 2000, "sequential calls timed per setup")
	scale := fs.String("scale", "1/1,1000/250,10000/250,1000/1", "scale steps, `CALLS/PER_CONN`, comma-separated")
	fs.IntVar(&o.hosts, "hosts", 10, "LAN hosts of the scale lab, which the scale steps spread their connections over")
	fs.IntVar(&o.window, "window", 32, "call requests per write when calls are set up in bulk")
	fs.StringVar(&o.profile, "profile", "", "record perf profiles into `dir`: the kernel under GRE load, in a phase of its own after the measured one (and after each scale step's GRE); "+
		"the daemon while the scale steps set up and tear down calls (perf slows it: take the scale figures from a run without)")
	fs.StringVar(&o.routerNft, "router-nft", "", "nft -f `file` run in the router of every pptp-alg lab once its daemon has started, to try variants of its ruleset")
	fs.BoolVar(&o.goBench, "gobench", true, "also run the Go benchmarks of alg and nat")
	only := fs.String("only", "", "run only these sections, comma-separated: "+strings.Join(sectionNames, ", ")+" (the Go benchmarks have -gobench)")
	skip := fs.String("skip", "", "leave out these sections, comma-separated")
	fs.DurationVar(&o.idle, "idle", 5*time.Minute, "idle section: length of each window the daemon is watched in, with no calls and with -idle-calls held")
	fs.IntVar(&o.idleCalls, "idle-calls", 1000, "idle section: calls held in its second window")
	fs.IntVar(&o.connectConns, "connect-conns", 40, "connect section: control connections timed per setup, idle and with -connect-flows")
	fs.IntVar(&o.connectRounds, "connect-rounds", 4, "connect section: rounds in which the idle and the loaded condition take turns")
	fs.IntVar(&o.connectFlows, "connect-flows", 30000, "connect section: unrelated UDP flows made through each router for the loaded condition")
	concurrent := fs.String("concurrent", "100/2", "concurrent section: `CONNS/CALLS`: that many control connections, each setting up that many calls, all at the same time")
	fs.IntVar(&o.concurrentRounds, "concurrent-rounds", 5, "concurrent section: rounds, the setups taking turns")
	fs.IntVar(&o.flushes, "flushes", 20, "flush section: `times` the router runs nft flush ruleset during steady control traffic")
	fs.IntVar(&o.flushConns, "flush-conns", 20, "flush section: control connections with one call each, sending Echo-Requests meanwhile")
	fs.BoolVar(&o.verbose, "v", false, "also log each comparison's medians and rounds kept, and slow call set-ups, to stderr (progress lines come anyway)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *smoke {
		// Tiny counts, unless a flag says otherwise.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{
			"duration": "100ms", "reps": "3", "scale-reps": "1", "sizes": "64", "latency-calls": "30", "scale": "1/1,100/50,20/1", "hosts": "2",
			"gobench": "false", "idle": "2s", "idle-calls": "20", "connect-conns": "4", "connect-rounds": "2", "connect-flows": "500",
			"concurrent": "10/2", "concurrent-rounds": "2", "flushes": "3", "flush-conns": "4",
		} {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return o, err
				}
			}
		}
		o.boost = false
	}
	var err error
	if o.sections, err = parseSections(*only, *skip); err != nil {
		return o, err
	}
	if a, b, ok := strings.Cut(*concurrent, "/"); ok {
		o.concurrentConns, _ = strconv.Atoi(a)
		o.concurrentCalls, _ = strconv.Atoi(b)
	}
	if o.concurrentConns < 1 || o.concurrentCalls < 1 || o.concurrentCalls > 1000 {
		return o, fmt.Errorf("-concurrent: %q: want CONNS/CALLS, at most 1000 calls a connection", *concurrent)
	}
	if o.idle < time.Second || o.idleCalls < 1 || o.connectConns < 1 || o.connectRounds < 1 || o.connectFlows < 1 || o.connectFlows > maxFlows ||
		o.concurrentRounds < 1 || o.flushes < 1 || o.flushConns < 1 {
		return o, fmt.Errorf("-idle must be at least 1s; -idle-calls, -connect-conns, -connect-rounds, -concurrent-rounds, -flushes, -flush-conns positive; -connect-flows 1 to %d", maxFlows)
	}
	for f := range strings.SplitSeq(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 1400 {
			return o, fmt.Errorf("-sizes: %q: want 0 to 1400", f)
		}
		o.sizes = append(o.sizes, n)
	}
	for f := range strings.SplitSeq(*scale, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		a, b, _ := strings.Cut(strings.TrimSpace(f), "/")
		n, err1 := strconv.Atoi(a)
		k, err2 := strconv.Atoi(b)
		// The bench's PAC hands out server call IDs from half the space.
		if err1 != nil || err2 != nil || n < 1 || k < 1 || n > serverIDs/2 {
			return o, fmt.Errorf("-scale: %q: want CALLS/PER_CONN, at most %d calls", f, serverIDs/2)
		}
		o.scale = append(o.scale, scaleStep{n, min(k, n)})
	}
	if o.reps < 1 || o.scaleReps < 1 || o.duration <= 0 || o.latencyCalls < 1 || o.hosts < 1 || o.hosts > 100 || o.window < 1 {
		return o, errors.New("-reps, -scale-reps, -duration, -latency-calls, -window must be positive; -hosts 1 to 100")
	}
	return o, nil
}

// parseSections is the set of sections -only and -skip leave.
func parseSections(only, skip string) (map[string]bool, error) {
	list := func(flag, s string) (map[string]bool, error) {
		m := map[string]bool{}
		for f := range strings.SplitSeq(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			if !slices.Contains(sectionNames, f) {
				return nil, fmt.Errorf("-%s: no section %q (there are %s)", flag, f, strings.Join(sectionNames, ", "))
			}
			m[f] = true
		}
		return m, nil
	}
	o, err := list("only", only)
	if err != nil {
		return nil, err
	}
	k, err := list("skip", skip)
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, s := range sectionNames {
		m[s] = (len(o) == 0 || o[s]) && !k[s]
	}
	return m, nil
}

// bench is one run.
type bench struct {
	opt    options
	log    *slog.Logger
	stderr io.Writer
	root   string
	algBin string

	rigs  [numSetups]*rig // by setup: GRE, latency; the pptp-alg one is the scale steps' 1-call partner
	scale *rig            // pptp-alg, for the scale steps and the flushes
	idle  *rig            // pptp-alg alone, for the idle section

	res results
}

// CPUs: the sender gets one, the receivers the other (on a 2-core machine
// the daemon and the kernel share both).
const (
	senderCPU   = 0
	receiverCPU = 1
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	opt, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := lab.Supported(); err != nil {
		return err
	}
	level := slog.LevelWarn
	if opt.verbose {
		level = slog.LevelInfo
	}
	b := &bench{opt: opt, stderr: stderr, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	b.res.started = time.Now()
	b.res.opt = opt
	b.res.command = "go run ./scripts/bench " + strings.Join(args, " ")
	if b.root, err = lab.ModuleRoot(); err != nil {
		return err
	}
	if opt.boost {
		boostPriority(b.log)
	}
	// Thousands of connections relayed: the daemon holds two sockets for
	// each, and this process two more.
	raiseFileLimit()

	dir, err := os.MkdirTemp("", "pptp-alg-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tools, err := lab.BuildTools(ctx, dir)
	if err != nil {
		return err
	}
	// Not stripped, so perf can name the daemon's functions.
	b.algBin = filepath.Join(dir, "pptp-alg")
	build := exec.CommandContext(ctx, "go", "build", "-o", b.algBin, "./cmd/pptp-alg")
	build.Dir = b.root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, out)
	}

	defer func() {
		if err != nil {
			for _, r := range b.allRigs() {
				fmt.Fprint(stderr, r.daemonTail())
			}
		}
		if cerr := b.closeRigs(); err == nil {
			err = cerr
		}
	}()
	dopt := daemonOptions{bin: b.algBin, routerNft: opt.routerNft,
		// Caps high enough for the largest scale step, the latency and GRE
		// connections on top.
		maxCalls: 2*b.maxScale() + 100}
	dopt.maxCalls = max(dopt.maxCalls, opt.idleCalls+100, opt.concurrentConns*opt.concurrentCalls+100)
	// One lab per setup, and one for the scale steps. Their prefixes let
	// each clean up what a killed run left of its kind.
	prefixes := [numSetups]string{"pabroute", "pabhelper", "pabalg"}
	if opt.has("gre") || opt.has("latency") || opt.has("connect") || opt.has("concurrent") || opt.has("scale") {
		for s := range numSetups {
			b.progress("lab for %v", s)
			if b.rigs[s], err = newRig(ctx, s, prefixes[s], 2, tools, b.root, dopt, b.log); err != nil {
				return fmt.Errorf("%v: %w", s, err)
			}
		}
	}
	if opt.has("scale") || opt.has("flush") {
		b.progress("lab for the scale steps")
		if b.scale, err = newRig(ctx, setupALG, "pabscale", max(opt.hosts, 2), tools, b.root, dopt, b.log); err != nil {
			return fmt.Errorf("scale: %w", err)
		}
	}

	// Idle first, while the other labs are quiet too.
	if opt.has("idle") {
		if err := b.idleSection(ctx, tools, dopt); err != nil {
			return fmt.Errorf("idle: %w", err)
		}
	}
	if opt.has("gre") {
		if err := b.greSection(); err != nil {
			return err
		}
		if err := b.profileGRE(); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	// Latency: the setups take turns too, one share of the calls each.
	for round := range opt.reps {
		if !opt.has("latency") {
			break
		}
		if (round+1)%10 == 0 || round+1 == opt.reps {
			b.progress("call set-up latency: round %d/%d", round+1, opt.reps)
		}
		for s, r := range b.rigs {
			if err := b.latency(r, (opt.latencyCalls+opt.reps-1)/opt.reps); err != nil {
				return fmt.Errorf("%v: latency: %w", setup(s), err)
			}
		}
	}
	if opt.has("connect") {
		if err := b.connectSection(ctx); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	}
	if opt.has("concurrent") {
		if err := b.concurrentSection(ctx); err != nil {
			return fmt.Errorf("concurrent: %w", err)
		}
	}
	// Steps of one call a connection run once, last: fw4 admits 25 new
	// connections a second to the router itself, the relay included, so
	// they take long, and the daemon keeps their memory a while, which
	// would show in the steps after them. GRE is measured in the first
	// round of a step, paired with the 1-call lab; with one call a
	// connection it would repeat the step with as many calls.
	if opt.has("scale") {
		b.res.scale = make([]scaleResult, len(opt.scale))
	}
	for round := range opt.scaleReps + 1 {
		for i := range b.res.scale {
			step := opt.scale[i]
			manyConns := step.perConn == 1 && step.calls > 1
			if manyConns != (round == opt.scaleReps) {
				continue
			}
			if manyConns {
				b.progress("scale %v: once", step)
			} else {
				b.progress("scale %v: round %d/%d", step, round+1, opt.scaleReps)
			}
			b.res.scale[i].step = step
			gre := round == 0 && (step.perConn > 1 || step.calls == 1)
			if err := b.scaleStep(ctx, &b.res.scale[i], round == 0 || manyConns, gre); err != nil {
				return fmt.Errorf("scale %v: %w", step, err)
			}
		}
	}
	// Last: it flushes the scale lab's whole ruleset, fw4's too.
	if opt.has("flush") {
		if err := b.flushSection(ctx); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
	}
	// A daemon that failed meanwhile fails the run; the labs must not
	// take CPU time from the Go benchmarks.
	if err := b.closeRigs(); err != nil {
		return err
	}
	if opt.goBench {
		b.progress("Go benchmarks")
		b.res.gobench, b.res.gobenchErr = b.goBench(ctx)
	}
	b.res.finished = time.Now()
	b.res.print(stdout)
	return nil
}

// allRigs are the labs that exist.
func (b *bench) allRigs() []*rig {
	var rs []*rig
	for _, r := range append(b.rigs[:], b.scale, b.idle) {
		if r != nil {
			rs = append(rs, r)
		}
	}
	return rs
}

// closeRigs removes the labs; it may be called again.
func (b *bench) closeRigs() error {
	var errs []error
	for _, r := range b.allRigs() {
		if err := r.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.lab.Name, err))
		}
	}
	b.rigs, b.scale, b.idle = [numSetups]*rig{}, nil, nil
	return errors.Join(errs...)
}

// progress tells the operator what long work is under way.
func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench: "+format+"\n", args...)
}

// maxScale is the most calls any scale step holds at once.
func (b *bench) maxScale() int {
	n := 1
	for _, s := range b.opt.scale {
		n = max(n, s.calls)
	}
	return n
}

// boostPriority puts the bench, and the lab processes it starts, in a
// scheduling group of its own at nice -20: on a shared machine, other
// sessions' load otherwise takes most of the CPU time at random and the
// rates mean nothing. (With autogroup, nice only orders tasks within a
// session; the group's own nice orders sessions.)
func boostPriority(log *slog.Logger) {
	unix.Setsid()
	if err := os.WriteFile("/proc/self/autogroup", []byte("-20"), 0); err != nil {
		log.Warn("cannot raise the scheduling priority; other load will show in the figures", "err", err)
	}
}

// raiseFileLimit raises the open-file limit for this process and the lab
// processes it starts. It goes through package syscall, which is what makes
// os/exec pass the new limit on rather than the one the process started
// with.
func raiseFileLimit() {
	lim := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		var cur syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur) == nil {
			cur.Cur = cur.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur)
		}
	}
}

// latency times n sequential calls on one control connection from h2 of
// r, each cleared before the next.
func (b *bench) latency(r *rig, n int) error {
	s := r.setup
	p, err := r.dial(r.lab.Hosts[1])
	if err != nil {
		return err
	}
	defer p.Close()
	const warm = 20
	for i := range warm + n {
		d, err := p.callLatency(uint16(i%1000 + 1))
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
		if i >= warm {
			b.res.latency[s] = append(b.res.latency[s], d)
		}
		if d > time.Millisecond {
			b.log.Info("slow call set-up", "setup", s, "call", i, "latency", d)
		}
	}
	return nil
}

// perfDaemon records the CPU profile of the daemon pid until the returned
// function is called, if -profile is set.
func (b *bench) perfDaemon(pid int, name string) func() {
	return b.perf(name, "-p", strconv.Itoa(pid))
}

// perfKernel records every CPU (the forwarding path runs in softirq).
func (b *bench) perfKernel(name string) func() {
	return b.perf(name, "-a")
}

func (b *bench) perf(name string, target ...string) func() {
	if b.opt.profile == "" {
		return func() {}
	}
	if err := os.MkdirAll(b.opt.profile, 0o755); err != nil {
		b.log.Warn("perf", "err", err)
		return func() {}
	}
	data := filepath.Join(b.opt.profile, name+".data")
	cmd := exec.Command("perf", append([]string{"record", "-q", "-g", "-o", data}, target...)...)
	if err := cmd.Start(); err != nil {
		b.log.Warn("perf", "err", err)
		return func() {}
	}
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		out, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children",
			"--percent-limit", "1", "--sort", "dso,sym", "-g", "none").Output()
		if err != nil {
			b.log.Warn("perf report", "err", err)
			return
		}
		os.WriteFile(filepath.Join(b.opt.profile, name+".txt"), out, 0o644)
	}
}
