package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Watch is a subscription to kernel notifications on one netlink socket,
// opened once. Its goroutine sleeps in the socket's receive until the
// kernel has something to say, so a quiet router costs it nothing.
//
// C receives a value when something that the Plane depends on may have
// changed; values coalesce, so one value can stand for many changes. C is
// closed when the socket fails for good; Err then says why.
type Watch struct {
	C      <-chan struct{}
	c      chan struct{}
	conn   *netlink.Conn
	closed atomic.Bool
	done   chan struct{}
	err    error
}

// WatchRuleset watches for deletions from the tables named table (family
// ip, and netdev for the fast path) in the network namespace netns (an fd;
// 0 for our own): `nft flush ruleset`, `nft delete table`, a chain, set or
// rule deleted, a firewall reload that flushes everything. The Plane's own
// changes are reported too; check what is there (Intact, CheckFastPath)
// before acting.
//
// Set elements are left out, so that calls coming and going do not wake
// the watcher: the kernel drops those notifications before they reach the
// socket (a socket filter), along with the one that ends each transaction.
// A lost element is found by the counter dumps that run while calls exist.
func WatchRuleset(netns int, table string) (*Watch, error) {
	return watchRuleset(netns, func(m netlink.Message) bool { return deletesFrom(m, table) })
}

// watchRuleset is WatchRuleset for the notifications that counts picks.
func watchRuleset(netns int, counts func(netlink.Message) bool) (*Watch, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("nat: watch ruleset: %w", err)
	}
	// The filter looks at the first message of each datagram: the kernel
	// groups one transaction's notifications, and the Plane's element
	// batches hold nothing but elements.
	if err := conn.SetBPF(dropTypes(
		unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM,
		unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_DELSETELEM,
		unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN,
	)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nat: watch ruleset: socket filter: %w", err)
	}
	if err := conn.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nat: watch ruleset: %w", err)
	}
	return startWatch(conn, counts), nil
}

// deletesFrom reports whether m is the notification of a deletion from a
// table named table, family ip or netdev.
func deletesFrom(m netlink.Message, table string) bool {
	if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < 4 {
		return false
	}
	switch m.Header.Type & 0xff {
	case unix.NFT_MSG_DELTABLE, unix.NFT_MSG_DELCHAIN, unix.NFT_MSG_DELRULE, unix.NFT_MSG_DELSET, unix.NFT_MSG_DELOBJ:
	default:
		return false
	}
	if f := nftables.TableFamily(m.Data[0]); f != nftables.TableFamilyIPv4 && f != nftables.TableFamilyNetdev {
		return false
	}
	// The table's name is attribute 1 of each of these messages
	// (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
	// NFTA_OBJ_TABLE).
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return false
	}
	for ad.Next() {
		if ad.Type() == 1 {
			return ad.String() == table
		}
	}
	return false
}

// WatchLinks watches the network namespace netns (an fd; 0 for our own)
// for what the WAN address, the fast path and the tproxy route are built
// from: the links named in names and their IPv4 addresses, every IPv4 route
// (a route through any interface can change where GRE to a server goes) and
// every policy rule. Other links coming and going, such as bridge ports or
// wireless interfaces, do not count.
func WatchLinks(netns int, names []string) (*Watch, error) {
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("nat: watch links: %w", err)
	}
	for _, g := range []uint32{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV4_RULE} {
		if err := conn.JoinGroup(g); err != nil {
			conn.Close()
			return nil, fmt.Errorf("nat: watch links: join group %d: %w", g, err)
		}
	}
	ours := map[string]bool{}
	for _, n := range names {
		ours[n] = true
	}
	return startWatch(conn, func(m netlink.Message) bool { return concerns(m, ours) }), nil
}

// concerns reports whether an rtnetlink notification is about a route or a
// policy rule, or about one of the links named in ours or an IPv4 address
// on one.
func concerns(m netlink.Message, ours map[string]bool) bool {
	var (
		attrs []byte
		name  uint16
	)
	switch m.Header.Type {
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE, unix.RTM_NEWRULE, unix.RTM_DELRULE:
		return true
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		if len(m.Data) < ifinfomsgLen {
			return true
		}
		attrs, name = m.Data[ifinfomsgLen:], unix.IFLA_IFNAME
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		if len(m.Data) < unix.SizeofIfAddrmsg {
			return true
		}
		// The label is the interface's name, or NAME:ALIAS.
		attrs, name = m.Data[unix.SizeofIfAddrmsg:], unix.IFA_LABEL
	default:
		return false
	}
	for b := attrs; len(b) > 0; {
		typ, v, rest, err := nextAttr(b)
		if err != nil {
			return true // cannot tell: look
		}
		b = rest
		if typ == name {
			n, _, _ := strings.Cut(strings.TrimRight(string(v), "\x00"), ":")
			return ours[n]
		}
	}
	return true
}

func startWatch(conn *netlink.Conn, counts func(netlink.Message) bool) *Watch {
	c := make(chan struct{}, 1)
	w := &Watch{C: c, c: c, conn: conn, done: make(chan struct{})}
	go w.run(counts)
	return w
}

func (w *Watch) run(counts func(netlink.Message) bool) {
	defer close(w.done)
	defer close(w.c)
	for {
		msgs, err := w.conn.Receive()
		if w.closed.Load() {
			return
		}
		if errors.Is(err, unix.ENOBUFS) {
			// The socket's buffer overflowed: notifications were lost,
			// so anything may have changed.
			w.signal()
			continue
		}
		if err != nil {
			w.err = fmt.Errorf("nat: watch: %w", err)
			return
		}
		for _, m := range msgs {
			if counts(m) {
				w.signal()
				break
			}
		}
	}
}

func (w *Watch) signal() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// Err reports why C was closed, once it is; nil after Close.
func (w *Watch) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

// Close ends the subscription and waits for its goroutine.
func (w *Watch) Close() error {
	w.closed.Store(true)
	err := w.conn.Close()
	<-w.done
	return err
}

// dropTypes is a socket filter that drops every datagram whose first
// netlink message has one of the types, and passes the rest whole.
func dropTypes(types ...uint16) []bpf.RawInstruction {
	// A classic BPF load reads in network byte order; nlmsg_type is in
	// the host's.
	loaded := func(t uint16) uint32 {
		return uint32(binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, t)))
	}
	prog := []bpf.Instruction{bpf.LoadAbsolute{Off: 4, Size: 2}} // nlmsg_type
	for i, t := range types {
		// Jump to the drop at the end, past the remaining tests and the pass.
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: loaded(t), SkipTrue: uint8(len(types) - i)})
	}
	prog = append(prog, bpf.RetConstant{Val: 0xffffffff}, bpf.RetConstant{Val: 0})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err) // a fixed program
	}
	return raw
}

// Intact reports whether the ip table is there whole: every chain with all
// its rules and every named set that the Plane installs. A false answer
// means Reinstall. It takes a few netlink round trips, for use when a
// Watch reports a change rather than on a timer.
func (p *Plane) Intact() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ok, err := p.intact()
	if err != nil {
		return false, fmt.Errorf("nat: check table ip %s: %w", p.cfg.Table, p.settle(err))
	}
	return ok, nil
}

func (p *Plane) intact() (bool, error) {
	want, err := p.obj.shape(p.cfg)
	if err != nil {
		return false, err
	}
	if _, err := p.conn.ListTableOfFamily(p.cfg.Table, nftables.TableFamilyIPv4); errors.Is(err, unix.ENOENT) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	chains, err := p.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, err
	}
	have := map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name == p.cfg.Table {
			have[ch.Name] = true
		}
	}
	for name, rules := range want.rules {
		if !have[name] {
			return false, nil
		}
		rs, err := p.conn.GetRules(p.obj.table, &nftables.Chain{Name: name, Table: p.obj.table})
		if err != nil {
			return false, err
		}
		if len(rs) != rules {
			return false, nil
		}
	}
	sets, err := p.conn.GetSets(p.obj.table)
	if err != nil {
		return false, err
	}
	names := map[string]bool{}
	for _, s := range sets {
		names[s.Name] = true
	}
	for _, name := range want.sets {
		if !names[name] {
			return false, nil
		}
	}
	return true, nil
}

// tableShape is what an intact ip table holds: the number of rules in
// each chain, and the named sets.
type tableShape struct {
	rules map[string]int
	sets  []string
}

// shape reads the table's shape from the batch that installs it, so that
// it follows the ruleset as that changes.
func (o objects) shape(cfg Config) (tableShape, error) {
	msgs, err := recordBatch(func(c *nftables.Conn) error { return o.queueInstall(c, cfg) })
	if err != nil {
		return tableShape{}, err
	}
	s := tableShape{rules: map[string]int{}}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return tableShape{}, err
		}
		var name string
		typ := m.Header.Type & 0xff
		for ad.Next() {
			switch {
			case typ == unix.NFT_MSG_NEWCHAIN && ad.Type() == unix.NFTA_CHAIN_NAME,
				typ == unix.NFT_MSG_NEWRULE && ad.Type() == unix.NFTA_RULE_CHAIN,
				typ == unix.NFT_MSG_NEWSET && ad.Type() == unix.NFTA_SET_NAME:
				name = ad.String()
			}
		}
		switch typ {
		case unix.NFT_MSG_NEWCHAIN:
			s.rules[name] += 0
		case unix.NFT_MSG_NEWRULE:
			s.rules[name]++
		case unix.NFT_MSG_NEWSET:
			if !strings.HasPrefix(name, "__") { // not an anonymous set
				s.sets = append(s.sets, name)
			}
		}
	}
	return s, nil
}
