package main

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// TestSmoke runs the whole benchmark with tiny counts, so that the command
// keeps working. It checks that every section is there, never a figure:
// how fast this machine is is not a test result.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a lab and runs the daemon; skipped with -short")
	}
	if err := lab.Supported(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out, errs bytes.Buffer
	if err := run(ctx, []string{"-smoke"}, &out, &errs); err != nil {
		t.Fatalf("bench -smoke: %v\n%s", err, errs.String())
	}
	for _, want := range []string{"## Idle cost", "## GRE forwarding", "## Call set-up latency", "## Control connection set-up",
		"## Concurrent call set-up", "## Scale, pptp-alg: calls", "## nft flush ruleset", "## Goals", "fw4 + pptp-alg"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("bench -smoke:\n%s", out.String())
}

func TestParseGoBench(t *testing.T) {
	out := []byte(`goos: linux
pkg: github.com/pptp-alg/pptp-alg/alg
BenchmarkFrame-2   	19203448	        68.23 ns/op	2696.60 MB/s	       0 B/op	       0 allocs/op
BenchmarkRelaySteadyState/echo/calls=1-2         	   39838	     26014 ns/op	   1.38 MB/s	       0 B/op	       0 allocs/op
pkg: github.com/pptp-alg/pptp-alg/nat
BenchmarkCounters10000-2   10   126019323 ns/op   43593240 B/op   427603 allocs/op
PASS
`)
	got := parseGoBench(out)
	if len(got) != 3 {
		t.Fatalf("parsed %d lines, want 3: %+v", len(got), got)
	}
	if l := got[1]; l.pkg != "alg" || l.name != "BenchmarkRelaySteadyState/echo/calls=1" || l.nsPerOp != 26014 || l.allocsPerOp != 0 || l.extra != "1.38 MB/s" {
		t.Errorf("relay line = %+v", l)
	}
	if l := got[2]; l.pkg != "nat" || l.bPerOp != 43593240 || l.allocsPerOp != 427603 {
		t.Errorf("counters line = %+v", l)
	}
}

func TestCell(t *testing.T) {
	c := &cell{
		pps:   [][]float64{{100, 50}, {100, 100}, {100, 200}, {100, 400}},
		steal: [][]float64{{0, 0}, {0, 0.2}, {0, 0}, {0.01, 0}},
	}
	// Round 2 is disturbed; three of four rounds remain.
	if got := c.kept(); !slices.Equal(got, []int{0, 2, 3}) {
		t.Errorf("kept = %v, want [0 2 3]", got)
	}
	if n, all := c.disturbed(); n != 1 || all != 8 {
		t.Errorf("disturbed = %d of %d, want 1 of 8", n, all)
	}
	if q1, q2, q3 := c.ratio(1, 0); q1 != 1.25 || q2 != 2 || q3 != 3 {
		t.Errorf("ratio quartiles = %v %v %v, want 1.25 2 3", q1, q2, q3)
	}
	if got := c.rate(1); got != 200 {
		t.Errorf("rate = %v, want 200", got)
	}
	// With most rounds disturbed, all count.
	c.steal = [][]float64{{0.1, 0}, {0, 0.2}, {0, 0}, {0.3, 0}}
	if got := c.kept(); len(got) != 4 {
		t.Errorf("kept = %v, want all four rounds", got)
	}
}

// TestMedianCI checks the order statistics the interval takes against
// published tables: n=30 gives the 10th and 21st values, n=60 the 22nd and
// 39th, n=6 the extremes; below 6 no interval reaches 95 %.
func TestMedianCI(t *testing.T) {
	for _, tc := range []struct {
		n      int
		lo, hi float64 // 1-based ranks
		ok     bool
	}{
		{5, 1, 5, false},
		{6, 1, 6, true},
		{30, 10, 21, true},
		{60, 22, 39, true},
	} {
		xs := make([]float64, tc.n)
		for i := range xs {
			xs[i] = float64(tc.n - i) // reversed: medianCI must sort
		}
		lo, hi, ok := medianCI(xs)
		if lo != tc.lo || hi != tc.hi || ok != tc.ok {
			t.Errorf("n=%d: [%v, %v] ok=%v, want [%v, %v] ok=%v", tc.n, lo, hi, ok, tc.lo, tc.hi, tc.ok)
		}
	}
}

func TestParseSections(t *testing.T) {
	for _, tc := range []struct {
		only, skip string
		want       []string
		err        bool
	}{
		{"", "", sectionNames, false},
		{"idle,flush", "", []string{"idle", "flush"}, false},
		{"", "gre, scale", []string{"idle", "latency", "connect", "concurrent", "flush"}, false},
		{"idle,gre", "gre", []string{"idle"}, false},
		{"idel", "", nil, true},
	} {
		m, err := parseSections(tc.only, tc.skip)
		if (err != nil) != tc.err {
			t.Errorf("-only %q -skip %q: error %v", tc.only, tc.skip, err)
			continue
		}
		var got []string
		for _, s := range sectionNames {
			if m[s] {
				got = append(got, s)
			}
		}
		if !tc.err && !slices.Equal(got, tc.want) {
			t.Errorf("-only %q -skip %q: %v, want %v", tc.only, tc.skip, got, tc.want)
		}
	}
}

// TestSocketKinds reads tracefs's lines as the idle section does.
func TestSocketKinds(t *testing.T) {
	trace := "# tracer: nop\n" +
		"        pptp-alg-812     [001] ..... 51.200001: sys_socket(family: 0x00000010, type: 0x00080003, protocol: 0x0000000c)\n" +
		"        pptp-alg-813     [000] ..... 51.200002: sys_socket(family: 0x00000002, type: 0x00080801, protocol: 0x00000000)\n" +
		"        pptp-alg-812     [001] ..... 51.200003: sys_socketpair(family: 0x00000001, type: 0x00000001, protocol: 0x00000000, usockvec: 0xc000)\n" +
		"        pptp-alg-812     [001] ..... 51.200004: sys_socket(family: 0x00000010, type: 0x00080003, protocol: 0x00000000)\n" +
		"        pptp-alg-812     [001] ..... 51.200005: sys_socket(family: 16, type: 0x80003, protocol: 12)\n"
	if got, want := socketKinds(trace), []string{"NETLINK_NETFILTER", "AF_INET", "AF_UNIX", "NETLINK_ROUTE", "NETLINK_NETFILTER"}; !slices.Equal(got, want) {
		t.Errorf("kinds %v, want %v", got, want)
	}
	if s := socketsText(map[string]int{"NETLINK_ROUTE": 2, "AF_INET": 1}); s != "3 (AF_INET 1, NETLINK_ROUTE 2)" {
		t.Errorf("socketsText = %q", s)
	}
}

// TestTraceSockets records this process's own sockets through tracefs:
// those opened after the trace started, from any of its threads, and none
// from before.
func TestTraceSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: tracefs")
	}
	before, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(before)
	tr, err := traceSockets(os.Getpid())
	if err != nil {
		t.Skip(err)
	}
	defer tr.Close()
	fds := make(chan int, 2)
	go func() {
		runtime.LockOSThread() // perhaps a thread started after the trace
		fd, _ := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER)
		fds <- fd
	}()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(pair[0])
	unix.Close(pair[1])
	unix.Close(<-fds)
	got, err := tr.opened()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"AF_UNIX", "NETLINK_NETFILTER"}; !slices.Equal(got, want) {
		t.Errorf("opened %v, want %v", got, want)
	}
}

// TestSchedSince: each thread counts from where it was, one born in
// between from zero; and this process's own threads read as running.
func TestSchedSince(t *testing.T) {
	before := map[int]taskSched{1: {cpu: 10, runs: 5}, 2: {cpu: 7, runs: 1}}
	after := map[int]taskSched{1: {cpu: 25, runs: 9}, 2: {cpu: 7, runs: 1}, 3: {cpu: 4, runs: 2}}
	if got, want := schedSince(before, after), (taskSched{cpu: 19, runs: 6}); got != want {
		t.Errorf("schedSince = %+v, want %+v", got, want)
	}
	own, err := taskScheds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var sum taskSched
	for _, s := range own {
		sum.cpu += s.cpu
		sum.runs += s.runs
	}
	if len(own) == 0 || sum.cpu <= 0 || sum.runs == 0 {
		t.Errorf("own threads %d, %+v: want some, with time on a CPU", len(own), sum)
	}
}
