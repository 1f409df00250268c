package nat

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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
	buf  []byte // replies to batches
	seq  uint32 // the last sequence number of an element batch (sendElements)
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

// readAcks reads the replies to a batch until the acknowledgement of its
// last message, or an error about the whole batch (sent back for its begin
// message: no nf_tables, no memory), and returns the first errno. Raw reads:
// mdlayher/netlink's Receive drops which message an error is for.
func readAcks(raw syscall.RawConn, buf []byte, begin, last uint32) error {
	var first error
	for {
		var (
			n    int
			rerr error
		)
		// Read waits for the socket to be readable, within its deadline.
		err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN
		})
		if err == nil && rerr != nil {
			err = os.NewSyscallError("recvfrom", rerr)
		}
		if err != nil {
			return err
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return errors.New("malformed netlink reply")
			}
			typ, seq := binary.NativeEndian.Uint16(b[4:]), binary.NativeEndian.Uint32(b[8:])
			if typ == unix.NLMSG_ERROR && l >= unix.NLMSG_HDRLEN+4 {
				if errno := -int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); errno != 0 && first == nil {
					first = unix.Errno(errno)
				}
				if seq == last || seq == begin {
					return first
				}
			}
			b = b[min(nlmsgAlign(l), len(b)):]
		}
	}
}

// ListTableOfFamily asks for one table, with a deadline.
func (c *nftConn) ListTableOfFamily(name string, family nftables.TableFamily) (*nftables.Table, error) {
	c.arm()
	return c.Conn.ListTableOfFamily(name, family)
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// sendBatch sends msgs, which google/nftables cannot put together itself
// (recordBatch), as one nf_tables transaction on the lasting socket, and
// reads the replies up to the last message's acknowledgement (readAcks), so
// the socket stays in step after an errno from the kernel. The last message
// must ask for one. The first errno is returned. A table owned by this socket can only be
// changed through it.
func (c *nftConn) sendBatch(msgs []netlink.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	c.arm()
	batch := make([]netlink.Message, 0, len(msgs)+2)
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_BEGIN))
	for _, m := range msgs {
		m.Header.Sequence, m.Header.PID = 0, 0 // the socket numbers them
		batch = append(batch, m)
	}
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_END))
	sent, err := c.sock.SendMessages(batch)
	if err != nil {
		return err
	}
	raw, err := c.sock.SyscallConn()
	if err != nil {
		// A test's stand-in for the kernel (nftables.WithTestDial) has no
		// descriptor; it answers each receive with one acknowledgement.
		_, err := c.sock.Receive()
		return err
	}
	return c.readReplies(raw, sent[0].Header.Sequence, sent[len(sent)-2].Header.Sequence)
}

// readReplies reads a batch's replies on raw up to the acknowledgement of
// its message last (readAcks), into the Conn's buffer.
func (c *nftConn) readReplies(raw syscall.RawConn, begin, last uint32) error {
	if c.buf == nil {
		c.buf = make([]byte, 16<<10) // an error echoes its message: a few hundred bytes
	}
	return readAcks(raw, c.buf, begin, last)
}
