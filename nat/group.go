package nat

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
)

// Calls set up at the same moment share one netlink batch: the kernel
// commits a batch as one transaction, whatever it holds, and commits one
// at a time. The first caller to find no batch in flight sends every
// addition waiting at that moment, its own included; those that came
// meanwhile wait, and the first of them sends the next batch. Alone, a
// caller sends its own batch at once, as before.

// addition is one caller's Addition, waiting for a batch.
type addition struct {
	Addition // its addresses IPv4 (newAddition)
	err      error
	queued   bool          // in the batch being sent
	first    bool          // its caller's first: a batch never splits a caller's
	lead     bool          // woken to send the next batch
	wake     chan struct{} // for a caller that waits: closed when err is set, or lead
}

// queue queues the addition's elements on p.conn. p.mu is held.
func (p *Plane) queueAddition(a *addition) error {
	if !a.Outbound {
		return p.queue(true, p.obj.greIn, nftables.SetElement{Key: inKey(a.Server, a.NATID), Val: inValue(a.Client, a.ClientID)})
	}
	// gre_calls first, in the same batch: no moment in which another LAN
	// host could pass for the call's client. Adding it again (when the
	// caller adds its calls again) changes nothing.
	if err := p.queue(true, p.obj.greCalls, nftables.SetElement{Key: inKey(a.Server, a.ServerID)}); err != nil {
		return err
	}
	return p.queue(true, p.obj.greOut, nftables.SetElement{Key: outKey(a.Client, a.Server, a.ServerID)})
}

// maxAdditions bounds a batch, and so the memory its messages take, when
// thousands of calls are set up at once; the rest go in the next.
const maxAdditions = 256

// additions are the additions waiting for a batch.
type additions struct {
	mu      sync.Mutex
	waiting []*addition
	spare   []*addition // the last batch's slice, for the next to reuse
	sending bool        // a caller is sending a batch
	batches int         // sent, for tests
	largest int         // the most additions in one batch, for tests
}

// add queues the additions, all in the same batch, and returns once a
// batch carried them, or failed to: each one's err is its own, even when
// others in the batch were refused. Only the first has a wake channel: a
// batch takes every addition waiting, so a caller's are never split.
func (p *Plane) add(as ...*addition) {
	g := &p.adds
	first := as[0]
	first.first = true
	g.mu.Lock()
	g.waiting = append(g.waiting, as...)
	lead := !g.sending
	if lead {
		g.sending = true
	} else {
		first.wake = make(chan struct{})
	}
	g.mu.Unlock()
	if !lead {
		<-first.wake
		if !first.lead {
			return
		}
	}
	g.mu.Lock()
	waiting := len(g.waiting)
	n := waiting
	if n > maxAdditions {
		for n = maxAdditions; n < waiting && !g.waiting[n].first; n++ {
		}
	}
	batch := append(g.spare, g.waiting[:n]...)
	g.waiting = append(g.waiting[:0], g.waiting[n:]...)
	clear(g.waiting[len(g.waiting):waiting])
	g.batches++
	g.largest = max(g.largest, len(batch))
	g.mu.Unlock()
	p.sendAdditions(batch)
	g.mu.Lock()
	if len(g.waiting) > 0 {
		next := g.waiting[0]
		next.lead = true
		close(next.wake)
	} else {
		g.sending = false
	}
	for _, b := range batch {
		if b != first && b.wake != nil {
			close(b.wake)
		}
	}
	clear(batch)
	g.spare = batch[:0]
	g.mu.Unlock()
}

// Addition is one half of a call's GRE mapping, as AddInbound (Outbound
// false: Server, NATID, Client, ClientID) or AddOutbound (Outbound true:
// Client, Server, ServerID) adds it.
type Addition struct {
	Outbound        bool
	Server, Client  netip.Addr
	NATID, ClientID uint16
	ServerID        uint16
}

// Add makes several additions at once, in one batch with whatever else is
// waiting, and returns each one's error, as AddInbound or AddOutbound
// would.
func (p *Plane) Add(adds []Addition) []error {
	errs := make([]error, len(adds))
	as := make([]*addition, 0, len(adds))
	idx := make([]int, 0, len(adds))
	for i, ad := range adds {
		a, err := newAddition(ad)
		if err != nil {
			errs[i] = additionError(ad, err)
			continue
		}
		as = append(as, a)
		idx = append(idx, i)
	}
	if len(as) > 0 {
		p.add(as...)
	}
	for j, a := range as {
		if a.err != nil {
			errs[idx[j]] = additionError(adds[idx[j]], a.err)
		}
	}
	return errs
}

func newAddition(ad Addition) (*addition, error) {
	s, err := ipv4(ad.Server)
	if err != nil {
		return nil, err
	}
	c, err := ipv4(ad.Client)
	if err != nil {
		return nil, err
	}
	ad.Server, ad.Client = s, c
	return &addition{Addition: ad}, nil
}

func additionError(ad Addition, err error) error {
	if ad.Outbound {
		return fmt.Errorf("nat: add outbound %v->%v/%d: %w", ad.Client, ad.Server, ad.ServerID, err)
	}
	return fmt.Errorf("nat: add inbound %v/%d: %w", ad.Server, ad.NATID, err)
}

// sendAdditions sends the additions as one batch, with their fast-path
// elements: one commit for both tables. A batch stands or falls whole. If
// the kernel refuses it, the ip table's elements go again without the fast
// path's, which is rebuilt at the next check (its table may be gone, or out
// of step); if it refuses those too, each addition is sent again alone for
// its own answer.
func (p *Plane) sendAdditions(batch []*addition) {
	p.mu.Lock()
	defer p.mu.Unlock()
	queued := p.queueAdditions(batch)
	if queued == 0 {
		return
	}
	fast, ferr := p.fast.queueAdditions(&p.elements, batch)
	err := ferr
	if ferr == nil {
		err = p.sendQueued()
	} else {
		p.elements.reset()
	}
	if err != nil && (fast != nil || ferr != nil) {
		p.fast.dirty = true
		fast = nil
		if queued = p.queueAdditions(batch); queued == 0 {
			return
		}
		err = p.sendQueued()
	}
	if err == nil {
		p.fast.added(fast)
		return
	}
	for _, a := range batch {
		switch {
		case !a.queued:
		case queued == 1:
			a.err = err
		default:
			if a.err = p.queueAddition(a); a.err == nil {
				a.err = p.sendQueued()
			}
		}
	}
}

// queueAdditions queues the ip table's elements of the additions, and
// returns how many it queued. p.mu is held.
func (p *Plane) queueAdditions(batch []*addition) int {
	queued := 0
	for _, a := range batch {
		a.err = p.queueAddition(a)
		if a.queued = a.err == nil; a.queued {
			queued++
		}
	}
	return queued
}
