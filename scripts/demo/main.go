// Command demo builds the lab and shows pptp-alg at work: several LAN
// hosts behind a router running the daemon under an OpenWrt fw4-style
// firewall, a real pptpd server, a real pptp-linux tunnel from every host
// at once, and the router's mapping table. Then the project's simulator
// opens calls with identical call IDs from every host, to show the
// translation. Run it as root: scripts/demo.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

func main() {
	hosts := flag.Int("hosts", 3, "number of LAN hosts")
	frames := flag.Int("frames", 200, "PPP frames pushed through each tunnel")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: scripts/demo.sh [--hosts N] [--frames N]\n\n"+
			"Builds a lab in network namespaces (LAN hosts, a router running pptp-alg,\n"+
			"a PPTP server), holds a real PPTP tunnel from every host at once, prints\n"+
			"the router's mapping table, and removes everything again. Needs root.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *hosts, *frames, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(w io.Writer, format string, a ...any) {
	fmt.Fprintf(w, "==> "+format+"\n", a...)
}

func run(ctx context.Context, hosts, frames int, w io.Writer) error {
	if err := lab.Supported(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "pptp-alg-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step(w, "building pptp-alg, the simulator and the lab's helpers")
	tools, err := lab.BuildTools(ctx, dir)
	if err != nil {
		return err
	}
	root, err := lab.ModuleRoot()
	if err != nil {
		return err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/pptp-alg", "./scripts/pptpsim")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	alg, sim := filepath.Join(dir, "pptp-alg"), filepath.Join(dir, "pptpsim")

	step(w, "building the lab: %d LAN hosts, a router (fw4-style firewall), a server", hosts)
	l, err := lab.New(ctx, lab.Options{Hosts: hosts, Firewall: lab.FirewallFW4, Prefix: "pademo", Tools: tools})
	if err != nil {
		return err
	}
	defer func() {
		step(w, "removing the lab")
		l.Close()
	}()
	for _, h := range l.Hosts {
		fmt.Fprintf(w, "    %s %v  ->  router %v | %v  ->  server %v\n", h.Name, h.Addr, l.LANAddr, l.WANAddr, l.ServerAddr)
	}

	sock := filepath.Join(l.Dir, "pptp-alg.sock")
	step(w, "starting pptp-alg on the router: run --lan %s --wan %s", lab.RouterLAN, lab.RouterWAN)
	daemon, err := l.Start("pptp-alg", l.Router, nil, alg, "run", "--lan", lab.RouterLAN, "--wan", lab.RouterWAN, "--socket", sock)
	if err != nil {
		return err
	}
	defer func() {
		if err := daemon.Stop(); err != nil {
			fmt.Fprintln(w, "pptp-alg:", err)
		}
	}()
	wait, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := daemon.WaitFor(wait, "the control socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	}); err != nil {
		return err
	}
	mappings := func() error {
		out, err := l.Run(ctx, l.Router, alg, "mappings", "--socket", sock)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, indent(out))
		return nil
	}

	step(w, "starting pptpd (Poptop) on the server")
	if err := l.StartPPTPD(wait); err != nil {
		return err
	}

	step(w, "starting pptp-linux on every LAN host at once")
	var clients []*lab.Client
	for _, h := range l.Hosts {
		c, err := l.StartPPTPClient(h)
		if err != nil {
			return err
		}
		clients = append(clients, c)
	}
	for _, c := range clients {
		d, err := c.WaitUp(wait)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Host.Name, err)
		}
		fmt.Fprintf(w, "    %s: tunnel up after %v\n", c.Host.Name, d.Round(time.Millisecond))
	}
	step(w, "pushing %d PPP frames through each tunnel (pptpd's side echoes them)", frames)
	for _, c := range clients {
		n, err := c.Echo(ctx, frames)
		fmt.Fprintf(w, "    %s: %d/%d frames came back\n", c.Host.Name, n, frames)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Host.Name, err)
		}
	}
	step(w, "the router's mapping table (pptp-alg mappings)")
	if err := mappings(); err != nil {
		return err
	}
	step(w, "the daemon's state (pptp-alg status)")
	out, err := l.Run(ctx, l.Router, alg, "status", "--socket", sock)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, indent(out))
	for _, c := range clients {
		c.Close()
	}
	l.StopPPTPD()

	step(w, "now every host opens two calls with the same call IDs (1 and 2), held at once (pptpsim)")
	server, err := l.Start("pptpsim-server", l.Server, nil, sim, "server", "--listen", l.ServerAddr.String()+":1723", "--early-gre")
	if err != nil {
		return err
	}
	defer server.Stop()
	if err := server.WaitFor(wait, "the simulator", func() bool { return strings.Contains(server.Output(), `"listening"`) }); err != nil {
		return err
	}
	var held []*os.File
	for _, h := range l.Hosts {
		r, wr, err := os.Pipe()
		if err != nil {
			return err
		}
		p, err := l.Start("pptpsim-"+h.Name, h.NS, r, sim, "client", "--server", l.ServerAddr.String(), "--call-ids", "1,2", "--pings", "10", "--then", "hold")
		r.Close()
		if err != nil {
			return err
		}
		held = append(held, wr)
		if err := p.WaitFor(wait, "held calls", func() bool { return strings.Contains(p.Output(), `"holding"`) }); err != nil {
			return err
		}
	}
	step(w, "the mapping table: the server saw distinct NAT-IDs, each client its own call IDs")
	if err := mappings(); err != nil {
		return err
	}
	for _, f := range held {
		f.Close()
	}
	time.Sleep(500 * time.Millisecond)
	step(w, "every call hung up; the table is empty again")
	return mappings()
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
