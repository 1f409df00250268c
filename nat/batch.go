package nat

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// google/nftables has no expression for nft's fwd, and its expressions can
// only be marshalled, not defined, outside its package. The fast path's
// batch is therefore put together here: google/nftables writes the messages
// it can (recordBatch), the rules are encoded with expr.Marshal plus one
// hand-made fwd expression (ruleMsg), and sendBatch sends them all as one
// transaction.

// fwdNeigh is nft's `fwd ip to <reg addr> device <reg dev>`: it sends the
// packet out of the interface whose index is in dev, to the IPv4 neighbour
// whose address is in addr, after decrementing its TTL. Netdev family only.
type fwdNeigh struct{ addr, dev uint32 }

// The NFTA_FWD_* attributes (linux/netfilter/nf_tables.h), which x/sys/unix
// lacks.
const (
	nftaFwdSregDev  = 1
	nftaFwdSregAddr = 2
	nftaFwdNfproto  = 3
)

// marshal encodes the expression as one NFTA_LIST_ELEM's contents, as
// expr.Marshal does for the others.
func (f fwdNeigh) marshal() ([]byte, error) {
	data, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: nftaFwdSregDev, Data: binary.BigEndian.AppendUint32(nil, f.dev)},
		{Type: nftaFwdSregAddr, Data: binary.BigEndian.AppendUint32(nil, f.addr)},
		{Type: nftaFwdNfproto, Data: binary.BigEndian.AppendUint32(nil, unix.NFPROTO_IPV4)},
	})
	if err != nil {
		return nil, err
	}
	return netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_EXPR_NAME, Data: []byte("fwd\x00")},
		{Type: unix.NLA_F_NESTED | unix.NFTA_EXPR_DATA, Data: data},
	})
}

// ruleMsg encodes "add rule" of exprs, then fwd, to the end of chain.
func ruleMsg(ch *nftables.Chain, exprs []expr.Any, fwd fwdNeigh) (netlink.Message, error) {
	fam := byte(ch.Table.Family)
	var list []netlink.Attribute
	for _, e := range exprs {
		b, err := expr.Marshal(fam, e)
		if err != nil {
			return netlink.Message{}, err
		}
		list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b})
	}
	b, err := fwd.marshal()
	if err != nil {
		return netlink.Message{}, err
	}
	list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b})
	exprsData, err := netlink.MarshalAttributes(list)
	if err != nil {
		return netlink.Message{}, err
	}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: []byte(ch.Table.Name + "\x00")},
		{Type: unix.NFTA_RULE_CHAIN, Data: []byte(ch.Name + "\x00")},
		{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: exprsData},
	})
	if err != nil {
		return netlink.Message{}, err
	}
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | unix.NLM_F_APPEND,
		},
		Data: append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}, nil
}

// batchRecorder is a google/nftables Conn that sends nothing: take returns the
// messages queued on c since the last take, without the batch's begin and
// end, for sending on a socket of our own.
type batchRecorder struct {
	c    *nftables.Conn
	msgs []netlink.Message
}

func newBatchRecorder() (*batchRecorder, error) {
	r := &batchRecorder{}
	// Lasting: each new stand-in socket would seed a random source.
	c, err := nftables.New(nftables.AsLasting(), nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req == nil { // a receive: acknowledge
			return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}, nil
		}
		r.msgs = append(r.msgs, req...)
		return nil, nil
	}))
	if err != nil {
		return nil, err
	}
	r.c = c
	return r, nil
}

// take returns what was queued, nil if nothing was.
func (r *batchRecorder) take() ([]netlink.Message, error) {
	r.msgs = r.msgs[:0]
	if err := r.c.Flush(); err != nil {
		return nil, err
	}
	if len(r.msgs) < 2 {
		return nil, nil
	}
	return r.msgs[1 : len(r.msgs)-1], nil
}

// recordBatch returns the messages that queue asks google/nftables for,
// without the batch's begin and end, and without sending anything.
func recordBatch(queue func(c *nftables.Conn) error) ([]netlink.Message, error) {
	r, err := newBatchRecorder()
	if err != nil {
		return nil, err
	}
	if err := queue(r.c); err != nil {
		return nil, err
	}
	msgs, err := r.take()
	if err == nil && msgs == nil {
		err = errors.New("empty batch")
	}
	return msgs, err
}

// sendBatch sends msgs as one nf_tables transaction on a socket of its own
// in netns (an fd; 0 for our own) and waits for each acknowledgement. The
// socket is closed after: a failed batch may leave replies unread. Errors
// from the kernel keep their errno.
func sendBatch(netns int, msgs []netlink.Message) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return err
	}
	defer c.Close()
	batch := make([]netlink.Message, 0, len(msgs)+2)
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_BEGIN))
	want := 0
	for _, m := range msgs {
		m.Header.Sequence, m.Header.PID = 0, 0 // the socket numbers them
		if m.Header.Flags&netlink.Acknowledge != 0 {
			want++
		}
		batch = append(batch, m)
	}
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_END))
	if err := c.SetDeadline(time.Now().Add(replyTimeout)); err != nil {
		return err
	}
	if _, err := c.SendMessages(batch); err != nil {
		return err
	}
	for acks := 0; acks < want; {
		replies, err := c.Receive()
		if err != nil {
			return err
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error {
				acks++
			}
		}
	}
	return nil
}

func batchMsg(typ int) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
	}
}
