package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// scaleStep is one scale measurement: calls in all, calls per connection.
type scaleStep struct{ calls, perConn int }

func (s scaleStep) String() string { return fmt.Sprintf("%d/%d", s.calls, s.perConn) }

// scaleStep sets up r.step's calls through the scale lab's pptp-alg,
// measures GRE with all of them installed if gre is set, tears them down,
// and adds the round to r. profile records the daemon meanwhile.
func (b *bench) scaleStep(ctx context.Context, r *scaleResult, profile, gre bool) error {
	step := r.step
	s := b.scale
	type conn struct {
		host int
		p    *pns
		ids  []uint16
		sids []uint16
	}
	conns := make([]*conn, (step.calls+step.perConn-1)/step.perConn)
	r.conns = len(conns)
	left := step.calls
	for i := range conns {
		k := min(step.perConn, left)
		left -= k
		c := &conn{host: i % b.opt.hosts}
		for id := range k {
			c.ids = append(c.ids, uint16(id+1))
		}
		conns[i] = c
	}
	defer func() {
		for _, c := range conns {
			if c.p != nil {
				c.p.Close()
			}
		}
	}()

	// Connections first, not timed as calls.
	st, err := readProc(s.daemonPID)
	if err != nil {
		return err
	}
	r.rssIdle = append(r.rssIdle, st.RSS)
	start := time.Now()
	// Few dials at once: fw4 lets 25 SYNs a second into the router (burst
	// 50), and with 64 at once a dial could lose its SYN often enough for
	// its backoff to pass dialTimeout.
	if err := parallel(ctx, len(conns), 16, func(i int) (err error) {
		conns[i].p, err = s.dial(s.lab.Hosts[conns[i].host])
		return err
	}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	r.connect = append(r.connect, time.Since(start))

	stopPerf := func() {}
	if profile {
		stopPerf = b.perfDaemon(s.daemonPID, "daemon-calls-"+strings.ReplaceAll(step.String(), "/", "-"))
	}
	defer func() { stopPerf() }()
	st0, _ := readProc(s.daemonPID)
	start = time.Now()
	if err := parallel(ctx, len(conns), len(conns), func(i int) (err error) {
		conns[i].sids, err = conns[i].p.open(conns[i].ids, b.opt.window)
		return err
	}); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	r.setup = append(r.setup, time.Since(start))
	st1, _ := readProc(s.daemonPID)
	r.setupCPU += st1.CPU - st0.CPU
	// Settle, then read memory. Calls are counted in the kernel's sets,
	// which costs the daemon nothing; `pptp-alg mappings` comes last.
	time.Sleep(time.Second)
	st2, _ := readProc(s.daemonPID)
	r.rss = append(r.rss, st2.RSS)
	if in, out, err := s.kernelCalls(ctx); err != nil {
		return err
	} else if in != step.calls || out != step.calls {
		return fmt.Errorf("kernel holds %d inbound and %d outbound GRE mappings, want %d", in, out, step.calls)
	}
	// The daemon's own work while it holds the calls (a counter dump every
	// 10 s) shows in the largest RSS seen meanwhile.
	held := time.Now()
	stopSampling := sampleRSS(s.daemonPID)
	defer stopSampling()

	// GRE on h1's calls, on one and spread over all of them, each paired
	// with the lab of the GRE section, which holds one call. (On a step of
	// one call that pairing is the same setup twice.)
	if gre {
		var h1 calls
		for _, c := range conns {
			if c.host != 0 {
				continue
			}
			cs, err := s.callsOf(c.ids, c.sids)
			if err != nil {
				return err
			}
			h1.serverIDs = append(h1.serverIDs, cs.serverIDs...)
			h1.peerIDs = append(h1.peerIDs, cs.peerIDs...)
			h1.clientIDs = append(h1.clientIDs, cs.clientIDs...)
			h1.peer = cs.peer
		}
		r.spread = len(h1.serverIDs)
		one := calls{serverIDs: h1.serverIDs[:1], peerIDs: h1.peerIDs[:1], peer: h1.peer, clientIDs: h1.clientIDs[:1]}
		ref := b.rigs[setupALG]
		if err := ref.openCall(); err != nil { // if the GRE section did not
			return fmt.Errorf("%v: call: %w", ref.setup, err)
		}
		for _, d := range []direction{outbound, inbound} {
			for _, x := range []struct {
				name string
				cs   calls
				to   **cell
			}{{"1 call", one, &r.one[d]}, {"spread", h1, &r.all[d]}} {
				if x.name == "spread" && r.spread == 1 {
					continue // the same as on one call
				}
				c, err := b.alternate(fmt.Sprintf("scale %v, GRE %v on %s", step, d, x.name), []sender{
					func(w time.Duration) (float64, error) { return ref.rate(d, ref.call, 64, w) },
					func(w time.Duration) (float64, error) { return s.rate(d, x.cs, 64, w) },
				})
				if err != nil {
					return err
				}
				*x.to = c
				if b.opt.profile != "" {
					stop := b.perfKernel(fmt.Sprintf("scale-%d-%s-%s", step.calls, [...]string{"lan-wan", "wan-lan"}[d], strings.ReplaceAll(x.name, " ", "-")))
					_, err := s.rate(d, x.cs, 64, time.Second)
					stop()
					if err != nil {
						return err
					}
				}
			}
		}
	}
	if step.calls >= 1000 {
		time.Sleep(11*time.Second - time.Since(held))
	}
	r.rssHeld = max(r.rssHeld, stopSampling())
	if n, err := s.mappings(ctx, b.algBin); err != nil {
		return err
	} else if n != step.calls {
		return fmt.Errorf("daemon lists %d calls, want %d", n, step.calls)
	}
	time.Sleep(100 * time.Millisecond)
	st, _ = readProc(s.daemonPID)
	r.rssMappings = max(r.rssMappings, st.RSS)

	st5, _ := readProc(s.daemonPID)
	start = time.Now()
	if err := parallel(ctx, len(conns), len(conns), func(i int) error {
		return conns[i].p.clear(conns[i].ids, b.opt.window)
	}); err != nil {
		return fmt.Errorf("tear down: %w", err)
	}
	r.teardown = append(r.teardown, time.Since(start))
	st6, _ := readProc(s.daemonPID)
	r.teardownCPU += st6.CPU - st5.CPU
	r.hwm = max(r.hwm, st6.HWM)
	stopPerf()
	stopPerf = func() {}
	for _, c := range conns {
		c.p.Close()
		c.p = nil
	}
	if in, out, err := s.kernelCalls(ctx); err != nil {
		return err
	} else if in != 0 || out != 0 {
		return fmt.Errorf("after tear-down the kernel still holds %d inbound and %d outbound GRE mappings", in, out)
	}
	return nil
}

// sampleRSS reads the RSS of pid every 50 ms until the returned function
// is called, which returns the largest; calling it again returns the same.
func sampleRSS(pid int) (stop func() uint64) {
	done := make(chan struct{})
	result := make(chan uint64, 1)
	go func() {
		var m uint64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if st, err := readProc(pid); err == nil {
				m = max(m, st.RSS)
			}
			select {
			case <-done:
				result <- m
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	var m uint64
	return func() uint64 {
		once.Do(func() {
			close(done)
			m = <-result
		})
		return m
	}
}

// parallel runs f(0..n-1) with at most width at once and returns the first
// error. After an error or the end of ctx it starts no more.
func parallel(ctx context.Context, n, width int, f func(i int) error) error {
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, max(width, 1))
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		mu.Lock()
		if first == nil && ctx.Err() != nil {
			first = ctx.Err()
		}
		stop := first != nil
		mu.Unlock()
		if stop {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func median[T float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// quantile of sorted ds, nearest rank.
func quantile(ds []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}
