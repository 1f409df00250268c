package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

// commands are the subcommands with a manual page, and the options each
// must document.
var commands = map[string][]string{
	"run":      {"lan", "wan", "socket", "relay-port", "idle-timeout", "control-idle-timeout", "max-conns-per-client", "max-calls-per-client", "max-calls", "table", "verbose", "syslog"},
	"status":   {"json", "socket"},
	"enable":   {"socket"},
	"disable":  {"socket"},
	"mappings": {"json", "limit", "offset", "socket"},
	"drop":     {"server", "nat-call-id", "socket"},
	"doctor":   {"socket"},
}

func TestHelp(t *testing.T) {
	for cmd, opts := range commands {
		for _, flagName := range []string{"--help", "-h", "-help"} {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{cmd, flagName}, &stdout, &stderr)
			if err != nil || stderr.Len() > 0 {
				t.Errorf("%s %s: %v, stderr %q; want help on stdout and no error", cmd, flagName, err, stderr.String())
				continue
			}
			help := stdout.String()
			for _, want := range []string{"Usage: pptp-alg " + cmd, "\nOptions (one dash or two):\n", "\nExit status:\n  0  ", "\nExample:\n  pptp-alg " + cmd} {
				if !strings.Contains(help, want) {
					t.Errorf("%s %s: help lacks %q:\n%s", cmd, flagName, want, help)
				}
			}
			for _, o := range opts {
				if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(o) + `\b`).MatchString(help) {
					t.Errorf("%s help does not document -%s", cmd, o)
				}
			}
		}
	}

	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stdout); err != nil {
		t.Fatal(err)
	}
	for cmd := range commands {
		if !regexp.MustCompile(`(?m)^  ` + cmd + `\s`).MatchString(stdout.String()) {
			t.Errorf("pptp-alg --help does not list %s", cmd)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "-version", "version", "-V"} {
		var stdout bytes.Buffer
		if err := run(context.Background(), []string{arg}, &stdout, &stdout); err != nil || stdout.String() != "pptp-alg "+version+"\n" {
			t.Errorf("pptp-alg %s: %q, %v", arg, stdout.String(), err)
		}
	}
}

// TestUsageErrors: each is a usage error (exit status 2) that says what
// was wrong, and prints nothing on stdout.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate" (see 'pptp-alg --help')`},
		{[]string{"status", "--bogus"}, "status: flag provided but not defined: -bogus (see 'pptp-alg status --help')"},
		{[]string{"status", "now"}, `status: unexpected argument "now" (see 'pptp-alg status --help')`},
		{[]string{"disable", "--json"}, "disable: flag provided but not defined: -json"},
		{[]string{"enable", "x"}, `enable: unexpected argument "x"`},
		{[]string{"mappings", "--socket"}, "mappings: flag needs an argument: -socket"},
		{[]string{"doctor", "--verbose"}, "doctor: flag provided but not defined: -verbose"},
		{[]string{"mappings", "--limit", "-1"}, "mappings: --limit and --offset must be 0 or more"},
		{[]string{"mappings", "--offset", "x"}, `mappings: invalid value "x" for flag -offset`},
		{[]string{"drop"}, "drop: --server is required (see 'pptp-alg drop --help')"},
		{[]string{"drop", "--server", "203.0.113.9"}, "drop: --nat-call-id is required"},
		{[]string{"drop", "--server", "example.com", "--nat-call-id", "1"}, `drop: --server "example.com" is not an IPv4 address`},
		{[]string{"drop", "--server", "2001:db8::1", "--nat-call-id", "1"}, `drop: --server "2001:db8::1" is not an IPv4 address`},
		{[]string{"drop", "--server", "203.0.113.9", "--nat-call-id", "65536"}, "drop: --nat-call-id 65536 is not 0-65535"},
		{[]string{"drop", "--server", "203.0.113.9", "--nat-call-id", "1.5"}, `drop: invalid value "1.5" for flag -nat-call-id`},
		{[]string{"drop", "--server", "203.0.113.9", "--nat-call-id", "1", "now"}, `drop: unexpected argument "now"`},
		{[]string{"run"}, "run: --lan is required"},
		{[]string{"run", "--lan", " , "}, "run: --lan is required"},
		{[]string{"run", "--lan", "br-lan"}, "run: --wan is required"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--relay-port", "1723"}, "run: --relay-port must be 1-65535 and not 1723"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--relay-port", "70000"}, "run: --relay-port must be 1-65535 and not 1723"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--max-calls", "0"}, "run: limits must be at least 1"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--idle-timeout", "500ms"}, "run: --idle-timeout must be at least 1s"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--idle-timeout", "soon"}, `run: invalid value "soon" for flag -idle-timeout`},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--control-idle-timeout", "0s"}, "run: --control-idle-timeout must be at least 1s"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "extra"}, `run: unexpected argument "extra"`},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--relay-mark", "0"}, "want a nonzero 32-bit mark"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--tproxy-mark", "0x1100/0xf00"}, "the mark has bits outside its mask"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--relay-mark", "0x10000000"}, "--relay-mark must not carry --tproxy-mark"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--route-table", "254"}, "--route-table must be"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--rule-priority", "32766"}, "--rule-priority must be"},
		{[]string{"run", "--lan", "br-lan", "--wan", "wan", "--lan-control", "nat"}, "--lan-control must be redirect or tproxy"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tc.args, &stdout, &stderr)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pptp-alg %q: %v; want a usage error containing %q", tc.args, err, tc.want)
		}
		if stdout.Len() > 0 {
			t.Errorf("pptp-alg %q printed %q on stdout", tc.args, stdout.String())
		}
	}
}

func TestParseRunFlags(t *testing.T) {
	def := daemonConfig{
		lan: []string{"br-lan"}, wan: "wan", socket: defaultSocket, relayPort: 1724,
		idleTimeout: 5 * time.Minute, controlIdle: alg.DefaultControlIdleTimeout, limits: alg.DefaultLimits, table: "pptp_alg",
		fastPath: true, routerCalls: true, relayMark: defaultRelayMark,
		tproxyMark: maskedMark{0x10000000, 0x10000000}, routeTable: 1723, rulePriority: 1723,
	}
	for _, tc := range []struct {
		name string
		args []string
		want func(*daemonConfig)
	}{
		{"defaults", []string{"--lan", "br-lan", "--wan", "wan"}, func(*daemonConfig) {}},
		{"one dash", []string{"-lan", "br-lan", "-wan", "wan"}, func(*daemonConfig) {}},
		{"several LANs, spaces and empties dropped", []string{"--lan", "br-lan, br-guest,,", "--wan", "wan"},
			func(c *daemonConfig) { c.lan = []string{"br-lan", "br-guest"} }},
		{"everything", []string{"--lan=br-lan", "--wan=pppoe-wan", "--socket=/tmp/s", "--relay-port=2000",
			"--idle-timeout=10m", "--control-idle-timeout=1m", "--max-conns-per-client=2", "--max-calls-per-client=3",
			"--max-calls=4", "--table=t", "--fast-path=false", "--router-calls=false", "--relay-mark=0x10",
			"--tproxy-mark=0x100/0xf00", "--route-table=100", "--rule-priority=99", "--lan-control=tproxy", "--verbose"},
			func(c *daemonConfig) {
				c.wan, c.socket, c.relayPort, c.idleTimeout, c.controlIdle = "pppoe-wan", "/tmp/s", 2000, 10*time.Minute, time.Minute
				c.limits = alg.Limits{ConnsPerClient: 2, CallsPerClient: 3, Calls: 4}
				c.table, c.fastPath, c.verbose = "t", false, true
				c.routerCalls, c.relayMark = false, 0x10
				c.tproxyMark, c.routeTable, c.rulePriority = maskedMark{0x100, 0xf00}, 100, 99
				c.tproxy = true
			}},
		{"redirect by name", []string{"--lan", "br-lan", "--wan", "wan", "--lan-control", "redirect"}, func(*daemonConfig) {}},
	} {
		want := def
		want.lan = append([]string(nil), def.lan...)
		tc.want(&want)
		var stdout bytes.Buffer
		got, done, err := parseRunFlags(tc.args, &stdout)
		if err != nil || done {
			t.Errorf("%s: done %v, %v", tc.name, done, err)
			continue
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(daemonConfig{}, maskedMark{})); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestParseFlagsHelpIsDone(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Bool("json", false, "print JSON")
	var stdout bytes.Buffer
	done, err := parseFlags(fs, help{synopsis: "pptp-alg x", about: "Does x.", exit: "0  ok", example: "pptp-alg x"}, []string{"--json", "-h"}, &stdout)
	want := `Usage: pptp-alg x

Does x.

Options (one dash or two):
  -json
    	print JSON

Exit status:
  0  ok

Example:
  pptp-alg x
`
	if !done || err != nil || stdout.String() != want {
		t.Errorf("done %v, err %v, help (-want +got):\n%s", done, err, cmp.Diff(want, stdout.String()))
	}
}

// TestDropWire: what the CLI sends for drop is what the daemon reads.
func TestDropWire(t *testing.T) {
	req, err := dropRequest("203.0.113.9", 40000)
	if err != nil || req != "drop 203.0.113.9 40000" {
		t.Fatalf("dropRequest = %q, %v", req, err)
	}
	cmd, args, _ := strings.Cut(req, " ")
	server, id, err := parseDrop(args)
	if cmd != "drop" || err != nil || server.String() != "203.0.113.9" || id != 40000 {
		t.Errorf("parseDrop(%q) = %v, %v, %v", args, server, id, err)
	}
	for _, bad := range []string{"", "203.0.113.9", "203.0.113.9 1 2", "::1 1", "203.0.113.9 65536", "203.0.113.9 -1", "x 1"} {
		if _, _, err := parseDrop(bad); err == nil {
			t.Errorf("parseDrop(%q) accepted", bad)
		}
	}
}

func TestPageOf(t *testing.T) {
	ms := make([]controlapi.Mapping, 5)
	for i := range ms {
		ms[i].NATCallID = i + 1
	}
	ids := func(p MappingsPage) []int {
		var out []int
		for _, m := range p.Mappings {
			out = append(out, m.NATCallID)
		}
		return out
	}
	for _, tc := range []struct {
		offset, limit int
		want          []int
	}{
		{0, 0, []int{1, 2, 3, 4, 5}},
		{0, 2, []int{1, 2}},
		{2, 2, []int{3, 4}},
		{4, 2, []int{5}},
		{5, 2, nil},
		{9, 0, nil},
		{1, 0, []int{2, 3, 4, 5}},
	} {
		p := pageOf(ms, tc.offset, tc.limit)
		if p.Total != 5 || p.Offset != tc.offset || p.Mappings == nil || !slices.Equal(ids(p), tc.want) {
			t.Errorf("pageOf(offset %d, limit %d) = total %d offset %d %v, want %v", tc.offset, tc.limit, p.Total, p.Offset, ids(p), tc.want)
		}
	}
}

func TestPrintMappings(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var b bytes.Buffer
	err := printMappings(&b, []controlapi.Mapping{
		{Client: "192.168.1.20", ClientCallID: 7, Server: "203.0.113.9", ServerCallID: 40000, NATCallID: 7, Established: true,
			PacketsOut: 12, BytesOut: 1200, PacketsIn: 3, BytesIn: 300, Since: now.Add(-90 * time.Second)},
		{Client: "192.168.1.3", ClientCallID: 7, Server: "203.0.113.9", NATCallID: 1, Since: now.Add(-time.Second)},
	}, now)
	want := `CLIENT        CALL-ID  SERVER       SERVER-ID  NAT-ID  STATE    PKTS-OUT  BYTES-OUT  PKTS-IN  BYTES-IN  AGE
192.168.1.20  7        203.0.113.9  40000      7       up       12        1200       3        300       1m30s
192.168.1.3   7        203.0.113.9  0          1       dialing  0         0          0        0         1s
`
	if err != nil || b.String() != want {
		t.Errorf("printMappings: %v\n%s", err, cmp.Diff(want, b.String()))
	}
	b.Reset()
	if err := printMappings(&b, nil, now); err != nil || !strings.HasSuffix(b.String(), "(no active calls)\n") {
		t.Errorf("printMappings of none: %v\n%s", err, b.String())
	}
}
