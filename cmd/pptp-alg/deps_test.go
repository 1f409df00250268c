package main

import (
	"os"
	"os/exec"
	"path/filepath"
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

// maxRouterBinary is the size goal of the router binary: linux/arm v7,
// static, stripped (-s -w -trimpath), segments aligned to 4 KiB pages
// (-R 0x1000), as scripts/build-router.sh and the OpenWrt package build it.
const maxRouterBinary = 3.5 * 1024 * 1024

// TestRouterSize builds the router binary and holds it to the goal. Its
// size moves in steps of 4 KiB (the segments' alignment), so a small
// addition can cross it: then look for what grew with
// `go tool nm -size -sort size` on a build without -s -w. Name resolution
// alone (net.Dialer.DialContext or net.Listen with an address string)
// costs about 190 KiB: the daemon dials and listens with addresses.
func TestRouterSize(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool to build the router binary")
	}
	bin := filepath.Join(t.TempDir(), "pptp-alg")
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags", "-s -w -R 0x1000", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=7", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("linux/arm v7 router binary: %d bytes (%.2f MiB)", fi.Size(), float64(fi.Size())/(1024*1024))
	if fi.Size() > maxRouterBinary {
		t.Errorf("the linux/arm v7 router binary is %d bytes, over the %d of the goal (3.5 MiB)", fi.Size(), int64(maxRouterBinary))
	}
}
