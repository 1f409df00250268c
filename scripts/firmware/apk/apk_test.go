package apk

import (
	"bytes"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

func testTree() fstest.MapFS {
	return fstest.MapFS{
		"usr/sbin/tool":     {Data: bytes.Repeat([]byte("x"), 70000), Mode: 0o755},
		"etc/config/tool":   {Data: []byte("config tool 'main'\n"), Mode: 0o600},
		"etc/config/a":      {Data: nil, Mode: 0o644},
		"etc/init.d":        {Mode: fs.ModeDir | 0o755},
		"www/big/file.js":   {Data: bytes.Repeat([]byte("y"), 300), Mode: 0o644},
		"usr/share/x/y.nft": {Data: []byte("accept\n"), Mode: 0o644},
	}
}

func TestRoundTrip(t *testing.T) {
	info := Info{Name: "tool", Version: "1.2.3-r4", Arch: "aarch64_cortex-a53", Description: "a tool",
		License: "MIT", Origin: "tool", Maintainer: "me", URL: "https://example.org",
		Depends: []string{"libc", "firewall4", "libc"}}
	scripts := map[string]string{"post-install": "#!/bin/sh\ntrue\n", "pre-deinstall": "#!/bin/sh\n"}
	var b bytes.Buffer
	if err := Write(&b, info, testTree(), scripts, 1700000000); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b.Bytes(), []byte("ADBd")) {
		t.Fatalf("package starts %q, want ADBd (deflate)", b.Bytes()[:4])
	}
	p, err := Read(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	want := info
	want.Depends = []string{"firewall4", "libc"} // sorted, unique, as apk stores them
	if diff := cmp.Diff(want, p.Info); diff != "" {
		t.Errorf("info (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(scripts, p.Scripts); diff != "" {
		t.Errorf("scripts (-want +got):\n%s", diff)
	}
	var paths []string
	for _, f := range p.Files {
		paths = append(paths, f.Path)
		if f.Dir {
			continue
		}
		src := testTree()[f.Path]
		if !bytes.Equal(f.Data, src.Data) && !(len(f.Data) == 0 && len(src.Data) == 0) {
			t.Errorf("%s: data differs", f.Path)
		}
		if f.Mode != src.Mode.Perm() || f.Mtime != 1700000000 || f.Hash != sha256.Sum256(src.Data) {
			t.Errorf("%s: mode %v mtime %d, want %v 1700000000", f.Path, f.Mode, f.Mtime, src.Mode.Perm())
		}
	}
	// apk's order: directories sorted bytewise, each followed by its files.
	wantPaths := []string{"etc", "etc/config", "etc/config/a", "etc/config/tool", "etc/init.d",
		"usr", "usr/sbin", "usr/sbin/tool", "usr/share", "usr/share/x", "usr/share/x/y.nft",
		"www", "www/big", "www/big/file.js"}
	if diff := cmp.Diff(wantPaths, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	if p.InstalledSize != 70000+19+300+7 {
		t.Errorf("installed size %d", p.InstalledSize)
	}
}

func TestReadRejectsCorruptData(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, Info{Name: "t", Version: "1-r0", Arch: "noarch"}, testTree(), nil, 0); err != nil {
		t.Fatal(err)
	}
	raw := inflate(t, b.Bytes())
	i := bytes.Index(raw, []byte("accept\n"))
	raw[i] = 'A'
	if _, err := Read(bytes.NewReader(raw)); err == nil || !strings.Contains(err.Error(), "hash") {
		t.Fatalf("Read of a package with a changed file: %v, want a hash mismatch", err)
	}
}

func inflate(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := inflateTo(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestApkTools cross-checks a package with apk-tools 3 when APK_TOOLS names
// its apk binary (Debian ships none): verify, then extract and compare.
func TestApkTools(t *testing.T) {
	apk := os.Getenv("APK_TOOLS")
	if apk == "" {
		t.Skip("APK_TOOLS is not set to an apk-tools 3 binary")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "t.apk")
	var b bytes.Buffer
	if err := Write(&b, Info{Name: "t", Version: "1.0-r1", Arch: "noarch", Depends: []string{"x"}}, testTree(), nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(apk, "verify", "--allow-untrusted", file).CombinedOutput(); err != nil {
		t.Fatalf("apk verify: %v\n%s", err, out)
	}
	dest := filepath.Join(dir, "x")
	os.Mkdir(dest, 0o755)
	if out, err := exec.Command(apk, "extract", "--allow-untrusted", "--destination", dest, file).CombinedOutput(); err != nil {
		t.Fatalf("apk extract: %v\n%s", err, out)
	}
	for name, f := range testTree() {
		if f.Mode.IsDir() {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("%s after apk extract: %v, data equal %v", name, err, bytes.Equal(got, f.Data))
		}
	}
}
