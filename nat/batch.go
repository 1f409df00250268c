package nat

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// google/nftables has no expression for nft's fwd, and its expressions can
// only be marshalled, not defined, outside its package. The fast path's
// batch is therefore put together here: google/nftables writes the messages
// it can (recordBatch), the rules are encoded with expr.Marshal plus one
// hand-made fwd expression (ruleMsg), and nftConn.sendBatch sends them all
// as one transaction on the Plane's socket.

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

// tableFlagOwner is NFT_TABLE_F_OWNER (Linux 5.12), which x/sys/unix lacks.
const tableFlagOwner = 0x2

// ownTables makes the batch install t owned by the socket that sends it
// (NFT_TABLE_F_OWNER): only that socket may change it, `nft flush ruleset`
// leaves it, and the kernel deletes it when the socket closes. msgs is an
// install batch as recordBatch gives it, "add table", "delete table", "add
// table" and the rest. The first "add table" carries no flags, so that it
// takes any table of the name that this socket may replace, owned by it or
// left unowned by an older run (one with other flags would be refused);
// the last one carries the owner flag.
func ownTables(msgs []netlink.Message, t *nftables.Table) error {
	var adds []int
	for i, m := range msgs {
		if m.Header.Type == netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWTABLE) {
			adds = append(adds, i)
		}
	}
	if len(adds) != 2 {
		return fmt.Errorf("%d table additions in an install batch, want 2", len(adds))
	}
	var err error
	if msgs[adds[0]], err = tableMsg(t, nil); err != nil {
		return err
	}
	owner := uint32(tableFlagOwner)
	msgs[adds[1]], err = tableMsg(t, &owner)
	return err
}

// tableMsg is "add table" of t with flags, or without the flags attribute
// if flags is nil. google/nftables always sends flags 0.
func tableMsg(t *nftables.Table, flags *uint32) (netlink.Message, error) {
	attrs := []netlink.Attribute{{Type: unix.NFTA_TABLE_NAME, Data: []byte(t.Name + "\x00")}}
	if flags != nil {
		attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_TABLE_FLAGS, Data: binary.BigEndian.AppendUint32(nil, *flags)})
	}
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return netlink.Message{}, err
	}
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create,
		},
		Data: append([]byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}, data...),
	}, nil
}

func batchMsg(typ int) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
	}
}
