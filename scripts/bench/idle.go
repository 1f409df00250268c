package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// The idle section: what the daemon costs a router while nothing happens,
// with no calls and with calls held but quiet. A router's CPU is small
// and shared; a daemon that polls wakes it for nothing.

// idleResult is one window of watching the daemon.
type idleResult struct {
	calls   int
	window  time.Duration
	runs    uint64         // times its threads were put on a CPU
	sockets map[string]int // sockets opened, by kind (netlink protocol or family)
	cpu     time.Duration  // user and system time
}

func (r idleResult) wakeupsPerSecond() float64 { return float64(r.runs) / r.window.Seconds() }
func (r idleResult) cpuShare() float64         { return r.cpu.Seconds() / r.window.Seconds() }

func (r idleResult) socketCount() int {
	n := 0
	for _, k := range r.sockets {
		n += k
	}
	return n
}

// idleSettle is how long the daemon is left alone before a window starts,
// so that start-up or set-up work does not count.
const idleSettle = 5 * time.Second

// idleSection watches a daemon of its own (in a lab of its own) for
// opt.idle with no calls, then again with opt.idleCalls held.
func (b *bench) idleSection(ctx context.Context, tools *lab.Tools, dopt daemonOptions) error {
	b.progress("lab for the idle section")
	var err error
	if b.idle, err = newRig(ctx, setupALG, "pabidle", 2, tools, b.root, dopt, b.log); err != nil {
		return err
	}
	r := b.idle
	settle := min(idleSettle, b.opt.idle)
	b.progress("idle, no calls: %v", b.opt.idle)
	res, err := r.watchIdle(ctx, settle, b.opt.idle)
	if err != nil {
		return err
	}
	b.res.idle = append(b.res.idle, res)

	// The calls: 250 a connection, as in the scale steps.
	const perConn = 250
	var conns []*pns
	defer func() {
		for _, p := range conns {
			p.Close()
		}
	}()
	for left, i := b.opt.idleCalls, 0; left > 0; i++ {
		p, err := r.dial(r.lab.Hosts[i%len(r.lab.Hosts)])
		if err != nil {
			return err
		}
		conns = append(conns, p)
		var ids []uint16
		for id := range min(left, perConn) {
			ids = append(ids, uint16(id+1))
		}
		left -= len(ids)
		if _, err := p.open(ids, b.opt.window); err != nil {
			return err
		}
	}
	if in, out, err := r.kernelCalls(ctx); err != nil {
		return err
	} else if in != b.opt.idleCalls || out != b.opt.idleCalls {
		return fmt.Errorf("kernel holds %d inbound and %d outbound GRE mappings, want %d", in, out, b.opt.idleCalls)
	}
	b.progress("idle, %d calls held: %v", b.opt.idleCalls, b.opt.idle)
	if res, err = r.watchIdle(ctx, settle, b.opt.idle); err != nil {
		return err
	}
	res.calls = b.opt.idleCalls
	b.res.idle = append(b.res.idle, res)
	// The calls must still be there: a daemon that released them would
	// have been idle for another reason.
	if n, err := r.mappings(ctx, b.algBin); err != nil {
		return err
	} else if n != b.opt.idleCalls {
		return fmt.Errorf("after the idle window the daemon lists %d calls, want %d", n, b.opt.idleCalls)
	}
	return nil
}

// watchIdle waits settle, then counts what the daemon does for window.
func (r *rig) watchIdle(ctx context.Context, settle, window time.Duration) (idleResult, error) {
	res := idleResult{window: window}
	if err := sleep(ctx, settle); err != nil {
		return res, err
	}
	sched0, err := taskScheds(r.daemonPID)
	if err != nil {
		return res, err
	}
	st0, err := readProc(r.daemonPID)
	if err != nil {
		return res, err
	}
	sockets, err := traceSockets(r.daemonPID)
	if err != nil {
		return res, err
	}
	defer sockets.Close()
	start := time.Now()
	if err := sleep(ctx, window); err != nil {
		return res, err
	}
	sched1, err := taskScheds(r.daemonPID)
	if err != nil {
		return res, err
	}
	st1, err := readProc(r.daemonPID)
	if err != nil {
		return res, err
	}
	opened, err := sockets.opened()
	if err != nil {
		return res, err
	}
	res.window = time.Since(start)
	res.runs = schedSince(sched0, sched1).runs
	res.cpu = st1.CPU - st0.CPU
	res.sockets = map[string]int{}
	for _, kind := range opened {
		res.sockets[kind]++
	}
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// taskSched is what a thread's schedstat counts (/proc/PID/task/TID/
// schedstat): its time on a CPU, and how many times it was put on one,
// which is every wakeup and every return after preemption; an idle
// process has none of them.
type taskSched struct {
	cpu  time.Duration
	runs uint64
}

// taskScheds reads the schedstat of each thread of pid. A thread that
// exits takes its counts with it; Go keeps its threads.
func taskScheds(pid int) (map[int]taskSched, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	scheds := map[int]taskSched{}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) < 3 {
			return nil, fmt.Errorf("%s/%s/schedstat: %q", dir, t.Name(), b)
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		runs, _ := strconv.ParseUint(f[2], 10, 64)
		scheds[tid] = taskSched{cpu: time.Duration(ns), runs: runs}
	}
	return scheds, nil
}

// schedSince sums over the threads of after what they counted since
// before; a thread born in between starts from 0.
func schedSince(before, after map[int]taskSched) taskSched {
	var sum taskSched
	for tid, a := range after {
		sum.cpu += a.cpu - before[tid].cpu
		sum.runs += a.runs - before[tid].runs
	}
	return sum
}
