package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

var dropHelp = help{
	synopsis: "pptp-alg drop --server ADDR --nat-call-id N [--socket PATH]",
	about: `
Drop one call the gateway carries: the one whose server is ADDR and whose
NAT call ID (the call ID the server was given; NAT-ID in 'pptp-alg
mappings') is N. Together they name a call uniquely.

The daemon closes the call's control connection, both to the LAN client
and to the server, as if one of them had hung up: the server ends its side
of the call, the client's tunnel goes down (its VPN software may dial
again), and the call's GRE mappings are removed from the kernel at once.
Any other call on the same control connection ends with it; PPTP clients
and servers normally carry one call per control connection.

It waits until the call has left the table, at most 2 seconds.`,
	exit: `
0  the call was dropped
1  there is no such call, or the daemon cannot be reached (not running, or
   not root), or the daemon is disabled
2  a bad flag or value`,
	example: `
pptp-alg drop --server 203.0.113.9 --nat-call-id 1
(the SERVER and NAT-ID columns of 'pptp-alg mappings' name the call)`,
}

func runDrop(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("drop", flag.ContinueOnError)
	server := fs.String("server", "", "IPv4 `address` of the call's server (required)")
	natID := fs.Int("nat-call-id", -1, "the call's NAT call `ID`, 0-65535 (required)")
	socket := fs.String("socket", defaultSocket, "control socket `path` of the daemon")
	if done, err := parseFlags(fs, dropHelp, args, stdout); done || err != nil {
		return err
	}
	req, err := dropRequest(*server, *natID)
	if err != nil {
		return usagef("drop: %v (see 'pptp-alg drop --help')", err)
	}
	var r controlapi.DropReply
	if err := controlapi.Ask(ctx, *socket, req, &r); err != nil {
		return err
	}
	m := r.Dropped
	fmt.Fprintf(stdout, "pptp-alg: dropped the call of %s (call ID %d) to %s (server call ID %d, NAT call ID %d); its control connection is closed\n",
		m.Client, m.ClientCallID, m.Server, m.ServerCallID, m.NATCallID)
	return nil
}

// dropRequest is the control request line that drops the call.
func dropRequest(server string, natID int) (string, error) {
	a, err := netip.ParseAddr(server)
	switch {
	case server == "":
		return "", errors.New("--server is required")
	case err != nil || !a.Is4():
		return "", fmt.Errorf("--server %q is not an IPv4 address", server)
	case natID == -1:
		return "", errors.New("--nat-call-id is required")
	case natID < 0 || natID > 65535:
		return "", fmt.Errorf("--nat-call-id %d is not 0-65535", natID)
	}
	return fmt.Sprintf("%s %s %d", controlapi.RequestDrop, a, natID), nil
}

// parseDrop reads the arguments of a drop request: "SERVER NAT-ID".
func parseDrop(args string) (netip.Addr, uint16, error) {
	f := strings.Fields(args)
	if len(f) != 2 {
		return netip.Addr{}, 0, errors.New("drop wants a server address and a NAT call ID")
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil || !a.Is4() {
		return netip.Addr{}, 0, fmt.Errorf("drop: %q is not an IPv4 address", f[0])
	}
	id, err := strconv.ParseUint(f[1], 10, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("drop: %q is not a call ID (0-65535)", f[1])
	}
	return a, uint16(id), nil
}

// dropWait bounds how long drop waits for the relay to release the call
// after closing its connection; that takes milliseconds.
const dropWait = 2 * time.Second

// drop closes the control connection that carries the call, which releases
// it and any other call of that connection, and waits until it is gone.
func (d *daemon) drop(server netip.Addr, natID uint16) (controlapi.DropReply, error) {
	d.mu.Lock() // the table and relay stay while the call goes
	defer d.mu.Unlock()
	if d.table == nil {
		return controlapi.DropReply{}, errors.New("drop: pptp-alg is disabled and carries no calls")
	}
	s, c := d.table.SessionOf(server, natID)
	if s == nil || !d.relay.CloseSession(s, "call dropped by request") {
		return controlapi.DropReply{}, fmt.Errorf("drop: no call to %s with NAT call ID %d ('pptp-alg mappings' lists them)", server, natID)
	}
	for deadline := time.Now().Add(dropWait); ; time.Sleep(5 * time.Millisecond) {
		if still, _ := d.table.SessionOf(server, natID); still != s {
			break
		}
		if time.Now().After(deadline) {
			return controlapi.DropReply{}, fmt.Errorf("drop: the call to %s with NAT call ID %d is still there after %v", server, natID, dropWait)
		}
	}
	d.log.Info("call dropped by request", "client", c.Client, "client_call_id", c.ClientCallID,
		"server", c.Server, "server_call_id", c.ServerCallID, "nat_call_id", c.NATCallID)
	return controlapi.DropReply{Dropped: controlapi.Mapping{
		Client: c.Client.String(), ClientCallID: int(c.ClientCallID),
		Server: c.Server.String(), ServerCallID: int(c.ServerCallID),
		NATCallID: int(c.NATCallID), Established: c.Established,
		Since: c.Since.UTC().Truncate(time.Second),
	}}, nil
}
