package nat

import (
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
)

// replyTimeout bounds every wait for the kernel's reply on a netlink
// socket. The kernel answers at once, or after a table dump of tens of
// thousands of entries within a fraction of a second; it never answers a
// message it has already refused. A kernel without nf_tables, for one,
// refuses a batch with one error for the whole of it, while google/nftables
// waits for an acknowledgement per message: without a deadline that wait
// never ends.
var replyTimeout = 5 * time.Second // tests shorten it

// nftConn is a lasting google/nftables Conn whose exchanges with the kernel
// each have a deadline. google/nftables keeps its socket to itself and sets
// none; the socket is caught as it is dialled (WithSockOptions), and the
// methods that talk to the kernel arm its deadline first.
type nftConn struct {
	*nftables.Conn
	sock *netlink.Conn
}

// dialNFT opens a lasting google/nftables Conn with opts.
func dialNFT(opts []nftables.ConnOption) (*nftConn, error) {
	c := &nftConn{}
	opts = append(slices.Clip(opts), nftables.AsLasting(), nftables.WithSockOptions(func(s *netlink.Conn) error {
		c.sock = s
		c.arm()
		return nil
	}))
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, err
	}
	c.Conn = conn
	return c, nil
}

// arm gives the next exchange replyTimeout from now. A test socket
// (nftables.WithTestDial) has no deadlines and ignores it.
func (c *nftConn) arm() {
	if c.sock != nil {
		_ = c.sock.SetDeadline(time.Now().Add(replyTimeout))
	}
}

// Flush sends the queued batch and waits, at most replyTimeout, for each
// acknowledgement.
func (c *nftConn) Flush() error {
	c.arm()
	return c.Conn.Flush()
}

// ListTableOfFamily asks for one table, with a deadline.
func (c *nftConn) ListTableOfFamily(name string, family nftables.TableFamily) (*nftables.Table, error) {
	c.arm()
	return c.Conn.ListTableOfFamily(name, family)
}
