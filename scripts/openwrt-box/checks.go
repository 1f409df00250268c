package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// A check does what a user of the router would do, through the same
// interfaces (the shell, apk, LuCI in a browser, PPTP clients on the LAN),
// and compares what the router does with what issue 11 asks of the
// package. Checks run in order and share the box: each leaves it as the
// next expects, and a check that needs something an earlier one failed to
// set up fails too.
type check struct {
	name string
	fn   func(ctx context.Context, b *box, s *state) error
}

// state is what checks hand on to later ones.
type state struct {
	firewall  string // /etc/config/firewall before apk add
	ruleset   string // fw4's ruleset before apk add
	installed bool
	pptpd     bool
	h1        *client // h1's tunnel, up since the tunnel check
}

var checks = []check{
	{"network: stock config, lan on br-lan (lan1, lan2), wan on its own port by DHCP", checkNetwork},
	{"fw4: loaded by the interface hotplug at boot", checkFW4Hotplug},
	{"setup: a second LAN network (office) and a guest network with input REJECT", checkSetupNetworks},
	{"apk add: both packages install; firewall config untouched, nothing started", checkApkAdd},
	{"ipk: same files and scripts as the apk", checkIpk},
	{"LuCI: log in, open Network > VPN Passthrough", checkLuciPage},
	{"LuCI: tick Enable, Save & Apply: the daemon runs under procd", checkLuciEnable},
	{"tunnel: h1's pptp-linux to pptpd through the box; the page's table shows the call, counters rising; its log line is daemon.info", checkTunnelTable},
	{"uci set; uci commit pptp-alg; reload_config applies a change", checkUciReload},
	{"LuCI: a bad value (idle timeout 1.5) is refused by the form", checkLuciBadValue},
	{"uci: a bad value gets one clear log line, no respawn loop", checkUciBadValue},
	{"ifdown wan; ifup wan: calls drop, the service comes back, new tunnels work", checkWanBounce},
	{"a second LAN network down and up keeps the first LAN's calls", checkSecondLanBounce},
	{"guest network (input REJECT) as a LAN network: its hosts' tunnels work", checkGuest},
	{"kill -9 the daemon: procd respawns it, new tunnels work", checkKill},
	{"LuCI: a user with only the read ACL sees the page, write actions disabled", checkLuciReadOnly},
	{"LuCI: untick Enable, Save & Apply: the daemon stops, its tables go", checkLuciDisable},
	{"service pptp-alg stop: the router is as without pptp-alg", checkServiceStop},
	{"apk del: firewall config byte-identical, nothing runs or stays loaded", checkApkDel},
}

func runChecks(ctx context.Context, b *box, filter *regexp.Regexp) (passed, failed int) {
	s := &state{}
	defer func() {
		if s.h1 != nil {
			s.h1.close()
		}
	}()
	for _, c := range checks {
		if filter != nil && !filter.MatchString(c.name) {
			continue
		}
		t := time.Now()
		err := c.fn(ctx, b, s)
		d := time.Since(t).Round(100 * time.Millisecond)
		if err != nil {
			failed++
			fmt.Printf("FAIL %s (%s)\n     %s\n", c.name, d, strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "\n     "))
		} else {
			passed++
			fmt.Printf("ok   %s (%s)\n", c.name, d)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return passed, failed
}

// --- helpers -------------------------------------------------------------------

// daemonPID returns the PID (in the box) of the running pptp-alg daemon
// (`pptp-alg run`, not a CLI command of LuCI's rpcd plugin), or 0.
func (b *box) daemonPID(ctx context.Context) int {
	out, _ := b.sh(ctx, `for p in $(pidof pptp-alg); do
		tr '\0' ' ' </proc/$p/cmdline | grep -q '^[^ ]*pptp-alg run ' && echo $p; done`)
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}

// procdInstance reports whether procd runs an instance of pptp-alg, and its
// command line.
func (b *box) procdInstance(ctx context.Context) (bool, string) {
	// jsonfilter of the bundle's commit evaluates only the last -e.
	out, _ := b.sh(ctx, `s=$(ubus call service list '{"name":"pptp-alg"}')
		echo "$s" | jsonfilter -e '@["pptp-alg"].instances.*.running'
		echo "$s" | jsonfilter -e '@["pptp-alg"].instances.*.command'`)
	return strings.Contains(out, "true"), strings.TrimSpace(out)
}

// waitRunning waits until procd runs the daemon and its process is there;
// want, if not empty, must be in its command line.
func (b *box) waitRunning(ctx context.Context, limit time.Duration, want string) (int, error) {
	var pid int
	err := b.waitFor(ctx, limit, "pptp-alg running under procd"+ifNotEmpty(" with "+want, want), func() (bool, string) {
		running, cmdline := b.procdInstance(ctx)
		pid = b.daemonPID(ctx)
		if !running || pid == 0 || !strings.Contains(cmdline, want) {
			return false, fmt.Sprintf("procd: %s; pid %d\n%s", cmdline, pid, b.logTail(ctx, 6))
		}
		// Ready is when it answers on its control socket, as its
		// README says.
		out, err := b.sh(ctx, "pptp-alg status")
		return err == nil, "pptp-alg status: " + out
	})
	return pid, err
}

func ifNotEmpty(s, cond string) string {
	if cond == "" {
		return ""
	}
	return s
}

// waitStopped waits until no pptp-alg process runs and no nftables table
// of pptp-alg is loaded.
func (b *box) waitStopped(ctx context.Context, limit time.Duration) error {
	return b.waitFor(ctx, limit, "pptp-alg stopped, its tables gone", func() (bool, string) {
		pid := b.daemonPID(ctx)
		tables := b.pptpTables(ctx)
		return pid == 0 && tables == "", fmt.Sprintf("pid %d; tables: %s", pid, tables)
	})
}

// pptpTables lists the nftables tables of pptp-alg.
func (b *box) pptpTables(ctx context.Context) string {
	out, _ := b.sh(ctx, "nft list tables | grep -i pptp")
	return strings.TrimSpace(out)
}

func (b *box) logTail(ctx context.Context, n int) string {
	out, _ := b.sh(ctx, fmt.Sprintf("logread | grep -v kernel | tail -n %d", n))
	return "log:\n" + strings.TrimRight(out, "\n")
}

// logSince returns the log lines after the first n.
func (b *box) logLines(ctx context.Context) []string {
	out, _ := b.sh(ctx, "logread")
	return strings.Split(strings.TrimRight(out, "\n"), "\n")
}

func (b *box) ensurePPTPD(ctx context.Context, s *state) error {
	if s.pptpd {
		return nil
	}
	if err := b.startPPTPD(ctx); err != nil {
		return err
	}
	s.pptpd = true
	return nil
}

// --- the box itself ------------------------------------------------------------

func checkNetwork(ctx context.Context, b *box, s *state) error {
	out, err := b.sh(ctx, `uci get network.lan.device; uci show network | grep -c "ports='lan1' 'lan2'";
		ls /sys/class/net/br-lan/brif | tr '\n' ' '; echo; uci get network.wan.device; uci get network.wan.proto;
		ifstatus wan | jsonfilter -e '@["ipv4-address"][0].address'`)
	if err != nil {
		return err
	}
	f := strings.Fields(out)
	if len(f) < 7 || f[0] != "br-lan" || f[1] != "1" || f[2] != "lan1" || f[3] != "lan2" || f[4] != "wan" || f[5] != "dhcp" ||
		!strings.HasPrefix(f[6], "203.0.113.") {
		return fmt.Errorf("want lan on br-lan with ports lan1 lan2, wan on wan by DHCP; got:\n%s", out)
	}
	// The LAN reaches the WAN through fw4's masquerading.
	if o, err := exec.CommandContext(ctx, "ip", "netns", "exec", b.hosts["h1"].ns, "busybox", "ping", "-c", "3", "-W", "2", serverAddr).CombinedOutput(); err != nil {
		return fmt.Errorf("h1 cannot ping the server through the box: %v\n%s", err, o)
	}
	return nil
}

func checkFW4Hotplug(ctx context.Context, b *box, s *state) error {
	out, err := b.sh(ctx, `logread | grep "Reloading firewall due to ifup"; nft list table inet fw4 | grep -c "chain input_lan {\|chain forward_wan {"`)
	if err != nil {
		return fmt.Errorf("%v\n%s", err, b.logTail(ctx, 20))
	}
	if !strings.Contains(out, "ifup of lan") || !strings.Contains(out, "ifup of wan") || !strings.HasSuffix(strings.TrimSpace(out), "2") {
		return fmt.Errorf("want fw4 reloaded by the ifup hotplug of lan and wan, its zone chains loaded; got:\n%s", out)
	}
	return nil
}

// checkSetupNetworks is the admin's own set-up, before pptp-alg exists: an
// office network on lan3 in the lan zone, and a guest network on lan4 in a
// zone of its own that rejects input and may forward to the WAN only.
func checkSetupNetworks(ctx context.Context, b *box, s *state) error {
	_, err := b.sh(ctx, `
		uci batch <<'EOF'
set network.office=interface
set network.office.device=lan3
set network.office.proto=static
add_list network.office.ipaddr=192.168.2.1/24
set network.guest=interface
set network.guest.device=lan4
set network.guest.proto=static
add_list network.guest.ipaddr=192.168.3.1/24
add_list firewall.@zone[0].network=office
set firewall.guest=zone
set firewall.guest.name=guest
add_list firewall.guest.network=guest
set firewall.guest.input=REJECT
set firewall.guest.output=ACCEPT
set firewall.guest.forward=REJECT
set firewall.guest_wan=forwarding
set firewall.guest_wan.src=guest
set firewall.guest_wan.dest=wan
EOF
		uci commit network; uci commit firewall; reload_config`)
	if err != nil {
		return err
	}
	err = b.waitFor(ctx, 30*time.Second, "office and guest up, fw4 with the guest zone", func() (bool, string) {
		out, _ := b.sh(ctx, `ifstatus office | jsonfilter -e '@.up'; ifstatus guest | jsonfilter -e '@.up';
			nft list chain inet fw4 input_guest 2>/dev/null | grep -c reject`)
		f := strings.Fields(out)
		return len(f) == 3 && f[0] == "true" && f[1] == "true" && f[2] != "0", out
	})
	if err != nil {
		return err
	}
	for _, h := range []string{"o1", "g1"} {
		if o, err := exec.CommandContext(ctx, "ip", "netns", "exec", b.hosts[h].ns, "busybox", "ping", "-c", "3", "-W", "2", serverAddr).CombinedOutput(); err != nil {
			return fmt.Errorf("%s cannot ping the server through the box: %v\n%s", h, err, o)
		}
	}
	return nil
}

// --- install -------------------------------------------------------------------

func checkApkAdd(ctx context.Context, b *box, s *state) error {
	var err error
	if s.firewall, err = b.sh(ctx, "cat /etc/config/firewall"); err != nil {
		return err
	}
	if s.ruleset, err = b.sh(ctx, "nft list table inet fw4"); err != nil {
		return err
	}
	apks, _ := filepath.Glob(filepath.Join(b.pkgs, "*.apk"))
	var names []string
	for _, a := range apks {
		names = append(names, "/tmp/pkgs/"+filepath.Base(a))
		if err := b.put(a, "/tmp/pkgs/"+filepath.Base(a)); err != nil {
			return err
		}
	}
	out, err := b.sh(ctx, "apk add --allow-untrusted "+strings.Join(names, " ")+" 2>&1")
	if err != nil {
		return err
	}
	s.installed = true
	info, err := b.sh(ctx, "apk info -e pptp-alg luci-app-pptp-alg; uci get pptp-alg.main.enabled; cat /etc/config/firewall")
	if err != nil {
		return fmt.Errorf("%v\napk add said:\n%s", err, out)
	}
	if !strings.HasPrefix(info, "pptp-alg\nluci-app-pptp-alg\n0\n") {
		return fmt.Errorf("want both installed, the service disabled; got:\n%s\napk add said:\n%s", firstLines(info, 3), out)
	}
	if fw := strings.SplitN(info, "\n", 4)[3]; fw != s.firewall {
		return fmt.Errorf("apk add changed /etc/config/firewall:\n%s", diff(s.firewall, fw))
	}
	if pid := b.daemonPID(ctx); pid != 0 {
		return fmt.Errorf("the daemon runs (pid %d) although the service is installed disabled", pid)
	}
	return nil
}

// checkIpk compares the .ipk with what apk installed: the same files, the
// same package scripts' intent, control fields for opkg.
func checkIpk(ctx context.Context, b *box, s *state) error {
	if !s.installed {
		return errors.New("needs the apk add check")
	}
	var problems []string
	for _, name := range []string{"pptp-alg", "luci-app-pptp-alg"} {
		ipks, _ := filepath.Glob(filepath.Join(b.pkgs, name+"_*.ipk"))
		if len(ipks) != 1 {
			return fmt.Errorf("want one %s .ipk in %s, found %d", name, b.pkgs, len(ipks))
		}
		ipk, err := readIpk(ipks[0])
		if err != nil {
			return err
		}
		listed, err := b.sh(ctx, "apk info -L "+name+" | grep -v '^lib/apk/' | grep . | sed 1d")
		if err != nil {
			return err
		}
		var apkFiles []string
		for _, f := range strings.Fields(listed) {
			apkFiles = append(apkFiles, "/"+f)
		}
		if d := diff(strings.Join(sorted(apkFiles), "\n"), strings.Join(sorted(ipk.files), "\n")); d != "" {
			problems = append(problems, name+": the .ipk's files differ from the .apk's (- apk, + ipk):\n"+d)
		}
		for _, field := range []string{"Package: " + name, "Version: ", "Architecture: ", "Description: "} {
			if !strings.Contains(ipk.control, field) {
				problems = append(problems, fmt.Sprintf("%s: control lacks %q", name, field))
			}
		}
		if name == "pptp-alg" {
			if !strings.Contains(ipk.control, "Architecture: x86_64") || !strings.Contains(ipk.control, "Depends: ") {
				problems = append(problems, name+": control wants Architecture x86_64 and Depends:\n"+ipk.control)
			}
			if !strings.Contains(ipk.scripts["conffiles"], "/etc/config/pptp-alg") {
				problems = append(problems, name+": conffiles lacks /etc/config/pptp-alg")
			}
			if !strings.HasPrefix(ipk.elf, "\x7fELF\x02\x01\x01") || ipk.elfMachine != 62 {
				problems = append(problems, name+": /usr/sbin/pptp-alg is not an x86-64 ELF")
			}
		}
		for _, sc := range []string{"postinst", "prerm"} {
			if !strings.Contains(ipk.scripts[sc], "default_"+sc) {
				problems = append(problems, fmt.Sprintf("%s: %s does not hand over to OpenWrt's default_%s", name, sc, sc))
			}
		}
	}
	if problems != nil {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// --- LuCI ---------------------------------------------------------------------

func checkLuciPage(ctx context.Context, b *box, s *state) error {
	rs, err := b.browse(ctx, step{"login": []string{"root", "box"}}, step{"shot": "01-status-after-login"},
		step{"open": pagePath}, step{"shot": "02-vpn-passthrough-disabled"}, step{"text": true})
	if err != nil {
		return err
	}
	if !rs[0].LoggedIn {
		return errors.New("LuCI did not accept root's password")
	}
	text := last(rs, "text").Text
	if !strings.Contains(text, "VPN Passthrough") || !strings.Contains(text, "Network") {
		return fmt.Errorf("the page does not show VPN Passthrough under Network:\n%s", firstLines(text, 30))
	}
	return nil
}

func checkLuciEnable(ctx context.Context, b *box, s *state) error {
	rs, err := b.browse(ctx, asRoot(step{"check": []any{"enabled", true}}, step{"shot": "03-enable-ticked"},
		step{"save": true}, step{"wait": 2000}, step{"shot": "04-enabled-applied"})...)
	if err != nil {
		return err
	}
	if o := last(rs, "save").Outcome; o != "applied" {
		return fmt.Errorf("Save & Apply: %s\n%s", o, firstLines(last(rs, "save").Text, 20))
	}
	if _, err := b.waitRunning(ctx, 20*time.Second, ""); err != nil {
		return err
	}
	if t := b.pptpTables(ctx); t == "" {
		return errors.New("the daemon runs but no pptp-alg nftables table is loaded")
	}
	return nil
}

// The row of the page's table for a client address, and the numbers in it
// once the addresses are taken out.
func rowNumbers(text, addr string) (string, []int) {
	for _, line := range strings.Split(text, "\n") {
		if !strings.Contains(line, addr) {
			continue
		}
		clean := regexp.MustCompile(`\d+\.\d+\.\d+\.\d+`).ReplaceAllString(line, " ")
		var ns []int
		for _, m := range regexp.MustCompile(`\d+`).FindAllString(clean, -1) {
			n, _ := strconv.Atoi(m)
			ns = append(ns, n)
		}
		return line, ns
	}
	return "", nil
}

func hasIn(ns []int, lo, hi int) bool {
	for _, n := range ns {
		if n >= lo && n <= hi {
			return true
		}
	}
	return false
}

func checkTunnelTable(ctx context.Context, b *box, s *state) error {
	if err := b.ensurePPTPD(ctx, s); err != nil {
		return err
	}
	if b.daemonPID(ctx) == 0 {
		return errors.New("needs the daemon running (the enable check)")
	}
	c, err := b.tunnel(ctx, b.hosts["h1"], 20)
	if err != nil {
		return err
	}
	s.h1 = c
	// 20 frames went each way; the page polls every few seconds.
	rs, err := b.browse(ctx, asRoot(step{"waitText": []any{b.hosts["h1"].addr, 15000}}, step{"shot": "05-call-in-table"})...)
	if err != nil {
		return err
	}
	first := last(rs, "waitText")
	row1, ns1 := rowNumbers(first.Text, b.hosts["h1"].addr)
	if !first.Found || !hasIn(ns1, 20, 30) {
		return fmt.Errorf("want a row for %s with its GRE count (20 frames out, 20 back); row: %q\n%s",
			b.hosts["h1"].addr, row1, firstLines(first.Text, 40))
	}
	if _, err := c.echo(50, 10*time.Second); err != nil {
		return err
	}
	rs, err = b.browse(ctx, asRoot(step{"waitText": []any{b.hosts["h1"].addr, 15000}}, step{"wait": 6000},
		step{"text": true}, step{"shot": "06-call-counters-risen"})...)
	if err != nil {
		return err
	}
	row2, ns2 := rowNumbers(last(rs, "text").Text, b.hosts["h1"].addr)
	if !hasIn(ns2, 70, 80) {
		return fmt.Errorf("counters did not rise to 70 after 50 more frames: before %q, after %q", row1, row2)
	}
	return checkLogSeverity(ctx, b)
}

// checkLogSeverity: the daemon's lines reach logd through /dev/log with
// their own severity, the call's as daemon.info; none came through procd's
// capture of stderr, which logs every line as daemon.err.
func checkLogSeverity(ctx context.Context, b *box) error {
	var call, stderr []string
	for _, l := range b.logLines(ctx) {
		switch {
		case strings.Contains(l, "daemon.info pptp-alg[") && strings.Contains(l, `msg="outgoing call" client=`+b.hosts["h1"].addr):
			call = append(call, l)
		case strings.Contains(l, "pptp-alg[") && strings.Contains(l, "level="):
			stderr = append(stderr, l)
		}
	}
	if len(call) == 0 || len(stderr) > 0 {
		return fmt.Errorf("want the call's log line as daemon.info and no line from the daemon's stderr; call lines %q, stderr lines %q\n%s",
			call, stderr, b.logTail(ctx, 12))
	}
	return nil
}

func checkUciReload(ctx context.Context, b *box, s *state) error {
	if b.daemonPID(ctx) == 0 {
		return errors.New("needs the daemon running (the enable check)")
	}
	if _, err := b.sh(ctx, "uci set pptp-alg.main.idle_timeout=120; uci commit pptp-alg; reload_config"); err != nil {
		return err
	}
	_, err := b.waitRunning(ctx, 15*time.Second, "120")
	if err == nil {
		return nil
	}
	// Say whether a second try works: reload_config sends config.change
	// only for files whose checksum it saved on its last run, so the
	// first one after a package brings a new config file does nothing.
	b.sh(ctx, "uci set pptp-alg.main.idle_timeout=121; uci commit pptp-alg; reload_config")
	if _, again := b.waitRunning(ctx, 10*time.Second, "121"); again == nil {
		return fmt.Errorf("the first reload_config after apk add did not apply idle_timeout=120 (a second one did: "+
			"/var/run/config.md5 had no checksum of /etc/config/pptp-alg yet): %w", err)
	}
	return err
}

func checkLuciBadValue(ctx context.Context, b *box, s *state) error {
	before, _ := b.sh(ctx, "uci get pptp-alg.main.idle_timeout")
	pid := b.daemonPID(ctx)
	rs, err := b.browse(ctx, asRoot(step{"fill": []any{"idle_timeout", "1.5"}}, step{"shot": "07-bad-value-typed"},
		step{"save": true}, step{"shot": "08-bad-value-saved"})...)
	if err != nil {
		return err
	}
	after, _ := b.sh(ctx, "uci get pptp-alg.main.idle_timeout")
	save := last(rs, "save")
	if !last(rs, "fill").Invalid && save.Outcome != "refused" {
		return fmt.Errorf("LuCI took idle timeout 1.5 (field not marked invalid, Save & Apply: %s); uci now %q", save.Outcome, strings.TrimSpace(after))
	}
	if after != before {
		return fmt.Errorf("the form was marked invalid, but uci changed from %q to %q", strings.TrimSpace(before), strings.TrimSpace(after))
	}
	if p := b.daemonPID(ctx); p != pid {
		return fmt.Errorf("the daemon restarted (pid %d, then %d)", pid, p)
	}
	return nil
}

func checkUciBadValue(ctx context.Context, b *box, s *state) error {
	mark := len(b.logLines(ctx))
	before := b.daemonPID(ctx)
	if _, err := b.sh(ctx, "uci set pptp-alg.main.idle_timeout=1.5; uci commit pptp-alg; reload_config"); err != nil {
		return err
	}
	// Watch for 12 s: procd's respawn would start the daemon again every
	// few seconds.
	pids := map[int]bool{}
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		// One new daemon is a restart with a safe default; more is
		// procd respawning one that exits.
		if p := b.daemonPID(ctx); p != 0 && p != before {
			pids[p] = true
		}
	}
	lines := b.logLines(ctx)
	if mark > len(lines) {
		mark = 0
	}
	var about []string
	for _, l := range lines[mark:] {
		if strings.Contains(l, "1.5") {
			about = append(about, l)
		}
	}
	running, cmdline := b.procdInstance(ctx)
	// Put the good value back for the checks after this one.
	b.sh(ctx, "uci set pptp-alg.main.idle_timeout=300; uci commit pptp-alg; reload_config")
	var problems []string
	if len(about) != 1 {
		problems = append(problems, fmt.Sprintf("want one log line about the bad value, got %d:\n%s", len(about), strings.Join(about, "\n")))
	}
	if len(pids) > 1 {
		problems = append(problems, fmt.Sprintf("the daemon was started %d times in 12 s (a respawn loop)", len(pids)))
	}
	if running && strings.Contains(cmdline, "1.5") {
		problems = append(problems, "the daemon runs with the bad value: "+cmdline)
	}
	if _, err := b.waitRunning(ctx, 20*time.Second, ""); err != nil {
		problems = append(problems, "after idle_timeout=300 again: "+err.Error())
	}
	if problems != nil {
		return errors.New(strings.Join(problems, "\n") + "\n" + b.logTail(ctx, 12))
	}
	return nil
}

// --- interfaces ---------------------------------------------------------------

func checkWanBounce(ctx context.Context, b *box, s *state) error {
	if err := b.ensurePPTPD(ctx, s); err != nil {
		return err
	}
	// A call that carries frames right before wan goes down.
	if s.h1 != nil {
		if _, err := s.h1.echo(5, 5*time.Second); err != nil {
			s.h1.close()
			s.h1 = nil
		}
	}
	if s.h1 == nil {
		c, err := b.tunnel(ctx, b.hosts["h1"], 10)
		if err != nil {
			return fmt.Errorf("before ifdown: %w", err)
		}
		s.h1 = c
	}
	if _, err := b.sh(ctx, "ifdown wan"); err != nil {
		return err
	}
	// The call must drop: within 15 s its frames stop coming back, or
	// pptp-linux gives up.
	dropped := false
	for end := time.Now().Add(15 * time.Second); !dropped && time.Now().Before(end); {
		_, err := s.h1.echo(1, time.Second)
		dropped = err != nil
	}
	s.h1.close()
	s.h1 = nil
	if _, err := b.sh(ctx, "ifup wan"); err != nil {
		return err
	}
	if !dropped {
		return errors.New("the call still carried frames 15 s after ifdown wan")
	}
	if err := b.waitFor(ctx, 30*time.Second, "wan up again with a DHCP lease", func() (bool, string) {
		out, _ := b.sh(ctx, `ifstatus wan | jsonfilter -e '@["ipv4-address"][0].address'`)
		return strings.HasPrefix(out, "203.0.113."), out
	}); err != nil {
		return err
	}
	if _, err := b.waitRunning(ctx, 30*time.Second, ""); err != nil {
		return err
	}
	c, err := b.tunnel(ctx, b.hosts["h1"], 20)
	if err != nil {
		return fmt.Errorf("new tunnel after ifup wan: %w", err)
	}
	s.h1 = c
	return nil
}

func checkSecondLanBounce(ctx context.Context, b *box, s *state) error {
	if err := b.ensurePPTPD(ctx, s); err != nil {
		return err
	}
	if _, err := b.sh(ctx, "uci add_list pptp-alg.main.lan=office; uci commit pptp-alg; reload_config"); err != nil {
		return err
	}
	if _, err := b.waitRunning(ctx, 15*time.Second, "lan3"); err != nil {
		return err
	}
	o1, err := b.tunnel(ctx, b.hosts["o1"], 10)
	if err != nil {
		return fmt.Errorf("office host's tunnel: %w", err)
	}
	o1.close()
	// Adding office restarted the daemon, which may have ended h1's call:
	// a new one, on the first LAN.
	if s.h1 != nil {
		s.h1.close()
	}
	if s.h1, err = b.tunnel(ctx, b.hosts["h1"], 10); err != nil {
		return fmt.Errorf("h1's tunnel: %w", err)
	}
	pid := b.daemonPID(ctx)
	if _, err := b.sh(ctx, "ifdown office; sleep 2; ifup office"); err != nil {
		return err
	}
	if err := b.waitFor(ctx, 20*time.Second, "office up again", func() (bool, string) {
		out, _ := b.sh(ctx, `ifstatus office | jsonfilter -e '@.up'`)
		return strings.TrimSpace(out) == "true", out
	}); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // time for a restart to happen, if one does
	if _, err := s.h1.echo(20, 10*time.Second); err != nil {
		return fmt.Errorf("h1's call on lan dropped when office went down and up (daemon pid %d, now %d): %w",
			pid, b.daemonPID(ctx), err)
	}
	return nil
}

func checkGuest(ctx context.Context, b *box, s *state) error {
	if err := b.ensurePPTPD(ctx, s); err != nil {
		return err
	}
	if _, err := b.sh(ctx, "uci add_list pptp-alg.main.lan=guest; uci commit pptp-alg; reload_config"); err != nil {
		return err
	}
	if _, err := b.waitRunning(ctx, 20*time.Second, "lan4"); err != nil {
		return err
	}
	c, err := b.tunnel(ctx, b.hosts["g1"], 20)
	if err != nil {
		return fmt.Errorf("guest host's tunnel: %w", err)
	}
	c.close()
	return nil
}

func checkKill(ctx context.Context, b *box, s *state) error {
	if err := b.ensurePPTPD(ctx, s); err != nil {
		return err
	}
	pid := b.daemonPID(ctx)
	if pid == 0 {
		return errors.New("needs the daemon running")
	}
	if s.h1 != nil {
		s.h1.close()
		s.h1 = nil
	}
	if _, err := b.sh(ctx, fmt.Sprintf("kill -9 %d", pid)); err != nil {
		return err
	}
	var now int
	if err := b.waitFor(ctx, 20*time.Second, "procd to respawn the daemon", func() (bool, string) {
		now = b.daemonPID(ctx)
		return now != 0 && now != pid, fmt.Sprintf("pid %d", now)
	}); err != nil {
		return err
	}
	if _, err := b.waitRunning(ctx, 10*time.Second, ""); err != nil {
		return err
	}
	c, err := b.tunnel(ctx, b.hosts["h2"], 20)
	if err != nil {
		return fmt.Errorf("new tunnel after the respawn: %w", err)
	}
	c.close()
	return nil
}

// --- LuCI, read-only and off ---------------------------------------------------

func checkLuciReadOnly(ctx context.Context, b *box, s *state) error {
	// A LuCI login with read access to LuCI's basics and to the app, and
	// no write access at all.
	_, err := b.sh(ctx, `uci -q delete rpcd.viewer; uci batch <<'EOF'
set rpcd.viewer=login
set rpcd.viewer.username=viewer
set rpcd.viewer.password='$6$pptpalgbox$qwqh/ITEHEMfBAXTJdUKibBtbwWxNVwYicw8w1XR8LPASpwGX1AxrUXap2O14RpTQBPi7WaIlPGs/0eQNSjxu0'
add_list rpcd.viewer.read=unauthenticated
add_list rpcd.viewer.read=luci-base
add_list rpcd.viewer.read=luci-app-pptp-alg
EOF
		uci commit rpcd; service rpcd reload`)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	rs, err := b.browse(ctx, step{"login": []string{"viewer", "box"}}, step{"open": pagePath}, step{"wait": 1500},
		step{"shot": "09-read-only-user"}, step{"text": true}, step{"controls": true})
	if err != nil {
		return err
	}
	if !rs[0].LoggedIn {
		return errors.New("LuCI did not log the viewer in")
	}
	text := last(rs, "text").Text
	if !strings.Contains(text, "VPN Passthrough") || strings.Contains(text, "Access denied") || strings.Contains(text, "No permission") {
		return fmt.Errorf("the viewer does not see the page:\n%s", firstLines(text, 20))
	}
	var writable []string
	for _, c := range last(rs, "controls").Controls {
		if c.Disabled {
			continue
		}
		// Moving around is no write: tabs, the menu, logging out.
		label := strings.ToLower(c.Label + " " + c.ID)
		if strings.Contains(label, "enabled") || strings.Contains(label, "save") || strings.Contains(label, "apply") ||
			strings.Contains(label, "start") || strings.Contains(label, "stop") || strings.Contains(label, "restart") ||
			strings.Contains(label, "pause") || strings.Contains(label, "resume") || strings.Contains(label, "drop") ||
			strings.Contains(label, "cbid.pptp-alg") {
			writable = append(writable, fmt.Sprintf("%s %q (%s)", c.Tag, c.Label, c.ID))
		}
	}
	if writable != nil {
		return fmt.Errorf("write controls enabled for a read-only user: %s", strings.Join(writable, ", "))
	}
	return nil
}

func checkLuciDisable(ctx context.Context, b *box, s *state) error {
	if s.h1 != nil {
		s.h1.close()
		s.h1 = nil
	}
	rs, err := b.browse(ctx, asRoot(step{"check": []any{"enabled", false}}, step{"shot": "10-enable-unticked"},
		step{"save": true}, step{"wait": 2000}, step{"shot": "11-disabled-applied"})...)
	if err != nil {
		return err
	}
	if o := last(rs, "save").Outcome; o != "applied" {
		return fmt.Errorf("Save & Apply: %s", o)
	}
	return b.waitStopped(ctx, 20*time.Second)
}

func checkServiceStop(ctx context.Context, b *box, s *state) error {
	if !s.installed {
		return errors.New("needs the apk add check")
	}
	if _, err := b.sh(ctx, "uci set pptp-alg.main.enabled=1; uci commit pptp-alg; reload_config"); err != nil {
		return err
	}
	if _, err := b.waitRunning(ctx, 20*time.Second, ""); err != nil {
		return err
	}
	if _, err := b.sh(ctx, "service pptp-alg stop"); err != nil {
		return err
	}
	if err := b.waitStopped(ctx, 15*time.Second); err != nil {
		return err
	}
	return b.sameAsBefore(ctx, s, "after service pptp-alg stop")
}

// sameAsBefore compares the firewall config and fw4's ruleset with what
// they were before pptp-alg was installed. The ruleset may differ by the
// package's own fw4 include while the package is installed.
func (b *box) sameAsBefore(ctx context.Context, s *state, when string) error {
	fw, err := b.sh(ctx, "cat /etc/config/firewall")
	if err != nil {
		return err
	}
	if fw != s.firewall {
		return fmt.Errorf("/etc/config/firewall %s differs from before apk add (- before, + after):\n%s", when, diff(s.firewall, fw))
	}
	rules, err := b.sh(ctx, "nft list table inet fw4")
	if err != nil {
		return err
	}
	if d := diff(withoutHandles(s.ruleset), withoutHandles(rules)); d != "" && !onlyInclude(d) {
		return fmt.Errorf("fw4's ruleset %s differs from before apk add (- before, + after):\n%s", when, d)
	}
	return nil
}

// onlyInclude reports whether every changed line of a diff is the
// package's fw4 include (a rule naming pptp-alg or untracked GRE).
func onlyInclude(d string) bool {
	for _, l := range strings.Split(d, "\n") {
		if l != "" && !strings.Contains(l, "pptp") && !strings.Contains(l, "gre") {
			return false
		}
	}
	return true
}

var handleRE = regexp.MustCompile(` # handle \d+|counter packets \d+ bytes \d+`)

func withoutHandles(s string) string { return handleRE.ReplaceAllString(s, "") }

func checkApkDel(ctx context.Context, b *box, s *state) error {
	if !s.installed {
		return errors.New("needs the apk add check")
	}
	out, err := b.sh(ctx, "apk del luci-app-pptp-alg pptp-alg 2>&1")
	if err != nil {
		return err
	}
	left, _ := b.sh(ctx, `apk info -e pptp-alg luci-app-pptp-alg; ls /usr/sbin/pptp-alg /etc/init.d/pptp-alg \
		/usr/share/nftables.d/chain-pre/*/*pptp* /www/luci-static/resources/view/pptp-alg.js 2>/dev/null; pidof pptp-alg;
		nft list ruleset | grep -i pptp; ubus list | grep -i pptp`)
	var problems []string
	if strings.TrimSpace(left) != "" {
		problems = append(problems, "left after apk del:\n"+left)
	}
	if err := b.sameAsBefore(ctx, s, "after apk del"); err != nil {
		problems = append(problems, err.Error())
	}
	if problems != nil {
		return errors.New(strings.Join(problems, "\n") + "\napk del said:\n" + out)
	}
	return nil
}
