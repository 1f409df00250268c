package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A Feature is a part of nftables that the daemon's tables use.
type Feature struct {
	Name   string // as nft users know it: "redirect"
	Kernel string // where the kernel has it: "nft_redir (CONFIG_NFT_REDIR)"
	// FastPath: only the fast path needs it. Without it the ip table
	// carries all GRE, more slowly.
	FastPath bool
	// Optional: the daemon runs without it, at a cost that its entry in
	// Features says.
	Optional bool
	requires string // the feature it cannot be tried without, if any
	// queue queues what the probe tries, after "add table".
	queue func(c *nftables.Conn, t *nftables.Table) error
	// fwd, instead: an ingress chain on lo with a rule that uses fwd,
	// which google/nftables cannot encode.
	fwd bool
	// tableFlags are flags the probe's table carries besides dormant.
	tableFlags uint32
}

// Features are what Probe tries, in order.
var Features = []Feature{
	{Name: "nftables", Kernel: "nf_tables (CONFIG_NF_TABLES)",
		queue: func(c *nftables.Conn, t *nftables.Table) error { return nil }},
	{Name: "maps with concatenated keys and counters", Kernel: "nf_tables' set types", requires: "nftables",
		queue: func(c *nftables.Conn, t *nftables.Table) error {
			// map m { type ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }
			return c.AddSet(&nftables.Set{Table: t, ID: 1, Name: "m", IsMap: true,
				KeyType: typeServerCall, DataType: typeServerCall, Counter: true}, nil)
		}},
	{Name: "notrack", Kernel: "nft_ct (CONFIG_NFT_CT)", requires: "nftables",
		queue: func(c *nftables.Conn, t *nftables.Table) error {
			// chain c { type filter hook prerouting priority raw; }; rule: notrack
			ch := c.AddChain(&nftables.Chain{Table: t, Name: "c", Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookPrerouting, Priority: prioRaw, Policy: policyAccept})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Notrack{}}})
			return nil
		}},
	{Name: "nat chains", Kernel: "nft_chain_nat (CONFIG_NFT_NAT)", requires: "nftables",
		queue: func(c *nftables.Conn, t *nftables.Table) error {
			natChain(c, t)
			return nil
		}},
	{Name: "redirect", Kernel: "nft_redir (CONFIG_NFT_REDIR)", requires: "nat chains",
		queue: func(c *nftables.Conn, t *nftables.Table) error {
			// rule: redirect to :1724
			c.AddRule(&nftables.Rule{Table: t, Chain: natChain(c, t), Exprs: []expr.Any{
				&expr.Immediate{Register: unix.NFT_REG_1, Data: be16(1724)},
				&expr.Redir{RegisterProtoMin: unix.NFT_REG_1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
			}})
			return nil
		}},
	{Name: "fib", Kernel: "nft_fib_ipv4 (CONFIG_NFT_FIB_IPV4)", requires: "nat chains",
		queue: func(c *nftables.Conn, t *nftables.Table) error {
			// rule: fib daddr type local
			c.AddRule(&nftables.Rule{Table: t, Chain: natChain(c, t), Exprs: []expr.Any{
				&expr.Fib{Register: unix.NFT_REG_1, FlagDADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: hostU32(rtnLocal)},
			}})
			return nil
		}},
	{Name: "tproxy", Kernel: "nft_tproxy and nf_tproxy_ipv4 (CONFIG_NFT_TPROXY)", requires: "nftables",
		queue: func(c *nftables.Conn, t *nftables.Table) error {
			// chain c { type filter hook prerouting priority raw; }; rule: tproxy to :1724
			ch := c.AddChain(&nftables.Chain{Table: t, Name: "c", Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookPrerouting, Priority: prioRaw, Policy: policyAccept})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Immediate{Register: unix.NFT_REG_1, Data: be16(1724)},
				&expr.TProxy{Family: unix.NFPROTO_IPV4, TableFamily: unix.NFPROTO_IPV4, RegPort: unix.NFT_REG_1},
			}})
			return nil
		}},
	{Name: "netdev family", Kernel: "CONFIG_NF_TABLES_NETDEV and CONFIG_NETFILTER_INGRESS", FastPath: true, requires: "nftables",
		queue: func(c *nftables.Conn, t *nftables.Table) error {
			ingressOnLo(c, t)
			return nil
		}},
	{Name: "fwd", Kernel: "nft_fwd_netdev (CONFIG_NFT_FWD_NETDEV)", FastPath: true, requires: "netdev family", fwd: true},
	// Without it (Config.Owner), `nft flush ruleset` deletes the tables,
	// and with them the NAT hooks, until the daemon restores them: busy
	// control connections taken to the relay by the redirect are reset.
	{Name: FeatureOwner, Kernel: "Linux 5.12 or later (NFT_TABLE_F_OWNER)", Optional: true, requires: "nftables",
		tableFlags: tableFlagOwner, queue: func(c *nftables.Conn, t *nftables.Table) error { return nil }},
}

// FeatureOwner names the table flag owner among Features: with it,
// Config.Owner.
const FeatureOwner = "table owner"

// probeTable names the table each probe adds. No probe is ever committed.
const probeTable = "pptp_alg_probe"

// chain c { type nat hook prerouting priority dstnat; }
func natChain(c *nftables.Conn, t *nftables.Table) *nftables.Chain {
	return c.AddChain(&nftables.Chain{Table: t, Name: "c", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: policyAccept})
}

// chain c { type filter hook ingress device lo priority filter; }: lo is in
// every network namespace.
func ingressOnLo(c *nftables.Conn, t *nftables.Table) *nftables.Chain {
	return c.AddChain(ingressChain(t, "c", "lo"))
}

// A Finding is one feature's probe: Err is nil when the kernel has it.
type Finding struct {
	Feature
	Err error
}

// ErrNotTried is a Finding's error when the feature it builds on is missing.
var ErrNotTried = errors.New("not tried")

// Probe asks the kernel of the network namespace netns (an fd; 0 for our
// own) for each of Features, and returns what it found in the same order.
// It changes nothing: each feature is tried in a batch that adds a table
// using it and ends with a message the kernel must refuse, so the kernel
// checks everything and commits nothing (no table appears, no event is
// sent). Each feature's answer is awaited for at most replyTimeout; a
// kernel that has the features answers at once, unless it loads their
// modules first.
func Probe(netns int) []Finding {
	fs := make([]Finding, len(Features))
	failed := map[string]bool{}
	for i, f := range Features {
		fs[i].Feature = f
		if failed[f.requires] {
			fs[i].Err = fmt.Errorf("%w: needs %s", ErrNotTried, f.requires)
		} else {
			fs[i].Err = probeFeature(netns, f)
		}
		failed[f.Name] = fs[i].Err != nil
	}
	return fs
}

// Missing returns the first finding of a feature the daemon cannot do
// without, if any; with fastPath, the fast path's features count too.
// Optional features never do.
func Missing(fs []Finding, fastPath bool) (Finding, bool) {
	for _, f := range fs {
		if f.Err != nil && !f.Optional && (fastPath || !f.FastPath) {
			return f, true
		}
	}
	return Finding{}, false
}

func probeFeature(netns int, f Feature) error {
	family := nftables.TableFamilyIPv4
	if f.FastPath {
		family = nftables.TableFamilyNetdev
	}
	t := &nftables.Table{Family: family, Name: probeTable}
	var ch *nftables.Chain
	msgs, err := recordBatch(func(c *nftables.Conn) error {
		c.AddTable(t)
		if f.fwd {
			ch = ingressOnLo(c, t)
			return nil
		}
		return f.queue(c, t)
	})
	if err != nil {
		return err
	}
	if f.fwd {
		// fwd ip to 127.0.0.1 device 1 (lo)
		r, err := ruleMsg(ch, []expr.Any{
			&expr.Immediate{Register: reg8, Data: binary.NativeEndian.AppendUint32(nil, 1)},
			&expr.Immediate{Register: reg9, Data: []byte{127, 0, 0, 1}},
		}, fwdNeigh{dev: reg8, addr: reg9})
		if err != nil {
			return err
		}
		msgs = append(msgs, r)
	}
	// The table is dormant: its base chains are checked but hook nothing,
	// which spares the kernel registering and, at the abort, unregistering
	// them. google/nftables sends no table flags.
	flags := unix.NFT_TABLE_F_DORMANT | f.tableFlags
	add, err := tableMsg(t, &flags)
	if err != nil {
		return err
	}
	msgs[0] = add
	// The table again, exclusively: the kernel must refuse it (EEXIST), and
	// with it the whole batch.
	refused := add
	refused.Header.Flags |= netlink.Excl
	msgs = append(msgs, refused)
	return sendRefusedBatch(netns, msgs, time.Now().Add(replyTimeout))
}

// sendRefusedBatch sends msgs, whose last the kernel must refuse with
// EEXIST, as one batch, and returns the first other error the kernel
// reports, or nil if that refusal was the first.
func sendRefusedBatch(netns int, msgs []netlink.Message, deadline time.Time) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	batch := []netlink.Message{batchMsg(unix.NFNL_MSG_BATCH_BEGIN)}
	for _, m := range msgs {
		m.Header.Sequence, m.Header.PID = 0, 0 // the socket numbers them
		batch = append(batch, m)
	}
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_END))
	sent, err := c.SendMessages(batch)
	if err != nil {
		return err
	}
	last := sent[len(sent)-2].Header.Sequence // the refused one
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 32<<10) // an error echoes the message it refuses
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN && rerr != unix.EINTR
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		for b := buf[:n]; len(b) > 0; {
			h, body, rest, err := nextMessage(b)
			if err != nil {
				return err
			}
			b = rest
			if h.Type != netlink.Error || len(body) < 4 {
				continue
			}
			errno := unix.Errno(-int32(binary.NativeEndian.Uint32(body)))
			switch {
			case errno == 0:
			case h.Sequence == last && errno == unix.EEXIST:
				return nil
			default:
				return errno
			}
		}
	}
}
