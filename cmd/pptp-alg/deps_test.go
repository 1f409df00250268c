package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the router binary small: these packages each add hundreds
// of KiB to megabytes (net/http about 4 MiB on linux/arm), and the daemon
// needs none of them. It checks the graph of a router build.
func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool to list the import graph")
	}
	cmd := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=7", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	if !deps["github.com/google/nftables"] {
		t.Fatalf("go list -deps does not list github.com/google/nftables; the listing is wrong:\n%s", out)
	}
	for _, banned := range []string{
		"net/http", "net/rpc", "text/template", "html/template", "regexp",
		"crypto/tls", "encoding/xml", "encoding/gob",
	} {
		if deps[banned] {
			t.Errorf("the router binary imports %s; find what pulls it in with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/pptp-alg | grep -w %s", banned, banned)
		}
	}
}
