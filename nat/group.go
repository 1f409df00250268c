package nat

import (
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

// addition is one caller's AddInbound or AddOutbound, waiting for a batch.
type addition struct {
	inbound        bool
	server, client netip.Addr // IPv4
	natID          uint16     // inbound
	clientID       uint16     // inbound
	serverID       uint16     // outbound
	err            error
	queued         bool          // in the batch being sent
	lead           bool          // woken to send the next batch
	wake           chan struct{} // for a caller that waits: closed when err is set, or lead
}

// queue queues the addition's elements on p.conn. p.mu is held.
func (p *Plane) queueAddition(a *addition) error {
	if a.inbound {
		return p.queue(true, p.obj.greIn, nftables.SetElement{Key: inKey(a.server, a.natID), Val: inValue(a.client, a.clientID)})
	}
	// gre_calls first, in the same batch: no moment in which another LAN
	// host could pass for the call's client. Adding it again (when the
	// caller adds its calls again) changes nothing.
	if err := p.queue(true, p.obj.greCalls, nftables.SetElement{Key: inKey(a.server, a.serverID)}); err != nil {
		return err
	}
	return p.queue(true, p.obj.greOut, nftables.SetElement{Key: outKey(a.client, a.server, a.serverID)})
}

// added does what follows an addition that went in. p.mu is held.
func (p *Plane) added(a *addition) {
	if a.inbound {
		if in, oif := p.fast.inElements(a.server, a.natID, a.client, a.clientID); in != nil {
			p.fast.deferAdd(p.fast.obj.greIn, *in, oif)
		}
		return
	}
	if out := p.fast.outElement(a.client, a.server, a.serverID); out != nil {
		p.fast.deferAdd(p.fast.obj.greOut, *out, nil)
	}
}

// additions are the additions waiting for a batch.
type additions struct {
	mu      sync.Mutex
	waiting []*addition
	spare   []*addition // the last batch's slice, for the next to reuse
	sending bool        // a caller is sending a batch
	batches int         // sent, for tests
}

// add queues an addition and returns once a batch carried it, or failed
// to: its error is the addition's own, even when others in the same batch
// were refused.
func (p *Plane) add(a *addition) error {
	g := &p.adds
	g.mu.Lock()
	g.waiting = append(g.waiting, a)
	lead := !g.sending
	if lead {
		g.sending = true
	} else {
		a.wake = make(chan struct{})
	}
	g.mu.Unlock()
	if !lead {
		<-a.wake
		if !a.lead {
			return a.err
		}
	}
	g.mu.Lock()
	batch := g.waiting
	g.waiting = g.spare
	g.batches++
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
		if b != a {
			close(b.wake)
		}
	}
	clear(batch)
	g.spare = batch[:0]
	g.mu.Unlock()
	return a.err
}

// sendAdditions sends the additions as one batch. A batch stands or falls
// whole, so if the kernel refuses it, each addition is sent again alone for
// its own answer.
func (p *Plane) sendAdditions(batch []*addition) {
	p.mu.Lock()
	defer p.mu.Unlock()
	queued := 0
	for _, a := range batch {
		a.err = p.queueAddition(a)
		if a.queued = a.err == nil; a.queued {
			queued++
		}
	}
	if queued == 0 {
		return
	}
	err := p.sendQueued()
	for _, a := range batch {
		switch {
		case !a.queued:
		case err == nil:
			p.added(a)
		case queued == 1:
			a.err = err
		default:
			if a.err = p.queueAddition(a); a.err == nil {
				a.err = p.sendQueued()
			}
			if a.err == nil {
				p.added(a)
			}
		}
	}
}
