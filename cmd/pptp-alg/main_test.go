package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pptp-alg/pptp-alg/alg"
)

// commands are the subcommands with a manual page, and the options each
// must document.
var commands = map[string][]string{
	"run":      {"lan", "wan", "socket", "relay-port", "idle-timeout", "control-idle-timeout", "max-conns-per-client", "max-calls-per-client", "max-calls", "table", "verbose"},
	"status":   {"json", "socket"},
	"enable":   {"socket"},
	"disable":  {"socket"},
	"mappings": {"json", "socket"},
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
			"--max-calls=4", "--table=t", "--fast-path=false", "--router-calls=false", "--relay-mark=0x10", "--verbose"},
			func(c *daemonConfig) {
				c.wan, c.socket, c.relayPort, c.idleTimeout, c.controlIdle = "pppoe-wan", "/tmp/s", 2000, 10*time.Minute, time.Minute
				c.limits = alg.Limits{ConnsPerClient: 2, CallsPerClient: 3, Calls: 4}
				c.table, c.fastPath, c.verbose = "t", false, true
				c.routerCalls, c.relayMark = false, 0x10
			}},
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
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(daemonConfig{})); diff != "" {
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
