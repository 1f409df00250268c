package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
)

// The concurrent section: many control connections setting up calls at
// the same moment, through the kernel helper and through pptp-alg in the
// same run. Whatever serialises call set-up shows in the tail of the
// latencies and in the rate.

// concurrentResult is one setup's figures over the rounds.
type concurrentResult struct {
	latency []time.Duration // every call, each from its request's write to its reply
	rates   []float64       // calls a second, per round
	// CPU time in each round's timed part, divided by the calls: of the
	// whole lab (labCPU), and of pptp-alg's daemon, all its threads.
	labCPU, daemonCPU []time.Duration
}

// labTimes is what the lab's tasks have spent on a CPU so far: the bench,
// whose goroutines are the clients and the server; the ksoftirqd threads,
// which forward what softirq leaves to them (the helper's work otherwise
// runs in the task a packet interrupts, so in the bench's time); and the
// daemon, if there is one.
type labTimes struct {
	bench, daemon map[int]taskSched
	softirqd      time.Duration
}

func (r *rig) labCPU() (labTimes, error) {
	var t labTimes
	var err error
	if t.bench, err = taskScheds(os.Getpid()); err != nil {
		return t, err
	}
	if r.daemonPID != 0 {
		if t.daemon, err = taskScheds(r.daemonPID); err != nil {
			return t, err
		}
	}
	for cpu := range runtime.NumCPU() {
		t.softirqd += softirqdCPU(cpu)
	}
	return t, nil
}

// since is what the lab spent on a CPU from before to t. A thread of the
// bench or the daemon born in between counts from zero (schedSince).
func (t labTimes) since(before labTimes) time.Duration {
	return schedSince(before.bench, t.bench).cpu + schedSince(before.daemon, t.daemon).cpu + t.softirqd - before.softirqd
}

// concurrentSection runs opt.concurrentRounds rounds; in each, the helper
// and the pptp-alg lab take a turn, in an order that alternates.
func (b *bench) concurrentSection(ctx context.Context) error {
	setups := []setup{setupHelper, setupALG}
	for round := range b.opt.concurrentRounds {
		b.progress("concurrent call set-up, %d connections × %d calls: round %d/%d",
			b.opt.concurrentConns, b.opt.concurrentCalls, round+1, b.opt.concurrentRounds)
		for j := range setups {
			s := setups[(round+j)%len(setups)]
			if err := b.concurrentRound(ctx, s); err != nil {
				return fmt.Errorf("%v: %w", s, err)
			}
		}
	}
	return nil
}

// concurrentRound opens the connections (not timed), then has every one
// write its Outgoing-Call-Requests at once, in one write each, and times
// each reply; then it clears the calls and closes the connections.
func (b *bench) concurrentRound(ctx context.Context, s setup) error {
	r := b.rigs[s]
	n, k := b.opt.concurrentConns, b.opt.concurrentCalls
	conns := make([]*pns, n)
	defer func() {
		for _, p := range conns {
			if p != nil {
				p.Close()
			}
		}
	}()
	// As the scale steps do: few dials at once, under fw4's SYN limit.
	if err := parallel(ctx, n, 16, func(i int) (err error) {
		conns[i], err = r.dial(r.lab.Hosts[i%len(r.lab.Hosts)])
		return err
	}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	ids := make([]uint16, k)
	for i := range ids {
		ids[i] = uint16(i + 1)
	}
	cpu0, err := r.labCPU()
	if err != nil {
		return err
	}
	lat := make([][]time.Duration, n)
	ready := make(chan struct{})
	var start time.Time
	errs := make(chan error, 1)
	go func() {
		errs <- parallel(ctx, n, n, func(i int) (err error) {
			<-ready
			lat[i], err = conns[i].timeCalls(ids)
			return err
		})
	}()
	start = time.Now()
	close(ready)
	if err := <-errs; err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	wall := time.Since(start)
	cpu1, err := r.labCPU()
	if err != nil {
		return err
	}
	calls := time.Duration(n * k)
	res := &b.res.concurrent[s]
	for _, l := range lat {
		res.latency = append(res.latency, l...)
	}
	res.rates = append(res.rates, float64(n*k)/wall.Seconds())
	res.labCPU = append(res.labCPU, cpu1.since(cpu0)/calls)
	if r.daemonPID != 0 {
		res.daemonCPU = append(res.daemonCPU, schedSince(cpu0.daemon, cpu1.daemon).cpu/calls)
	}
	if err := parallel(ctx, n, n, func(i int) error { return conns[i].clear(ids, len(ids)) }); err != nil {
		return fmt.Errorf("tear down: %w", err)
	}
	return nil
}

// timeCalls writes an Outgoing-Call-Request for each of ids in one write
// and returns, for each reply, the time from the write to reading it.
func (p *pns) timeCalls(ids []uint16) ([]time.Duration, error) {
	for _, id := range ids {
		p.out = (&alg.OutgoingCallRequest{CallID: id, CallSerialNumber: id, MinBPS: 300, MaxBPS: 100000000,
			BearerType: bearerAnalog, FramingType: framingAsync, PacketRecvWindow: 64}).Append(p.out)
	}
	p.c.SetDeadline(time.Now().Add(ioTimeout))
	start := time.Now()
	if _, err := p.c.Write(p.out); err != nil {
		return nil, err
	}
	p.out = p.out[:0]
	var ds []time.Duration
	for len(ds) < len(ids) {
		m, err := p.r.next()
		if err != nil {
			return nil, fmt.Errorf("outgoing-call-reply %d of %d: %w", len(ds)+1, len(ids), err)
		}
		if msgType(m) != alg.TypeOutgoingCallReply {
			continue
		}
		ds = append(ds, time.Since(start))
		if m[16] != alg.OutgoingCallResultConnected {
			return nil, fmt.Errorf("call %d refused: result %d error %d", get16(m, 14), m[16], m[17])
		}
	}
	return ds, nil
}
