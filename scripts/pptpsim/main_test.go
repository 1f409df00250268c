package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestClientFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		server  string
		callIDs []uint16
		ok      bool
	}{
		{name: "defaults", args: []string{"--server", "192.0.2.1"},
			server: "192.0.2.1:1723", callIDs: []uint16{1}, ok: true},
		{name: "calls", args: []string{"--server", "192.0.2.1:1724", "--calls", "3"},
			server: "192.0.2.1:1724", callIDs: []uint16{1, 2, 3}, ok: true},
		{name: "call ids", args: []string{"--server", "192.0.2.1", "--call-ids", "7, 7,0x10"},
			server: "192.0.2.1:1723", callIDs: []uint16{7, 7, 16}, ok: true},
		{name: "calls agree", args: []string{"--server", "192.0.2.1", "--calls", "2", "--call-ids", "1,1"},
			server: "192.0.2.1:1723", callIDs: []uint16{1, 1}, ok: true},
		{name: "calls disagree", args: []string{"--server", "192.0.2.1", "--calls", "2", "--call-ids", "1"}},
		{name: "call id too big", args: []string{"--server", "192.0.2.1", "--call-ids", "65536"}},
		{name: "no server", args: []string{"--calls", "1"}},
		{name: "bad local", args: []string{"--server", "192.0.2.1", "--local", "lan"}},
		{name: "negative pings", args: []string{"--server", "192.0.2.1", "--pings", "-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, cfg, _ := clientFlags()
			if _, err := parse(fs, tt.args, new(bytes.Buffer)); err != nil {
				t.Fatalf("parse: %v", err)
			}
			err := cfg.check()
			if !tt.ok {
				if err == nil {
					t.Fatalf("check: no error, want one")
				}
				return
			}
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			if cfg.server != tt.server {
				t.Errorf("server %q, want %q", cfg.server, tt.server)
			}
			if diff := cmp.Diff(tt.callIDs, cfg.clientConfig.callIDs); diff != "" {
				t.Errorf("call IDs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, nil, &out, &errOut); err != nil {
		t.Fatalf("--help: %v", err)
	}
	// Every flag of both commands is explained.
	for _, flag := range []string{"-listen", "-first-call-id", "-cdn", "-early-gre", "-send-sli",
		"-server", "-local", "-calls", "-call-ids", "-segment", "-pings", "-then", "-sli", "-wait"} {
		if !strings.Contains(out.String(), "  "+flag+" ") && !strings.Contains(out.String(), "  "+flag+"\n") {
			t.Errorf("--help does not explain %s", flag)
		}
	}
	err := run(t.Context(), []string{"client", "--segment", "sideways"}, nil, &out, &errOut)
	if !errors.As(err, new(usageError)) {
		t.Errorf("bad --segment: got %v, want a usage error", err)
	}
}
