// Package firmware tests what goes onto a router: the packages that
// scripts/openwrt-package.sh builds (apk for OpenWrt 25.12, ipk for 24.10),
// and the LuCI app's menu, ACL and rpcd plugin agreeing with each other.
package firmware

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pptp-alg/pptp-alg/scripts/firmware/apk"
)

// entry is one file of a package, whatever its format.
type entry struct {
	mode fs.FileMode
	data []byte
}

type pkg struct {
	name, version, arch string
	depends             []string
	conffiles           []string
	scripts             map[string]string // postinst, prerm, postrm
	files               map[string]entry  // absolute path; directories left out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// openwrtArch is a package arch whose Go target is this machine's, so the
// packaged binary runs here.
func openwrtArch(t *testing.T) string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64_generic"
	}
	t.Skipf("no OpenWrt arch for GOARCH %s", runtime.GOARCH)
	return ""
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// routerBinary builds pptp-alg once, as build-router.sh does but for this
// machine, with a version to look for.
func routerBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pptp-alg-firmware-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "pptp-alg")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=firmware-test",
			"-o", binPath, "./cmd/pptp-alg")
		cmd.Dir = moduleRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// buildPackages runs scripts/openwrt-package.sh and returns the pptp-alg
// and luci-app-pptp-alg packages it wrote.
func buildPackages(t *testing.T, format string) (main, luci pkg) {
	t.Helper()
	for _, tool := range []string{"bash", "tar", "gzip", "install", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	arch := openwrtArch(t)
	out := t.TempDir()
	cmd := exec.Command("scripts/openwrt-package.sh", "--arch", arch, "--format", format,
		"--bin", routerBinary(t), "-o", out)
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openwrt-package.sh: %v\n%s", err, b)
	} else {
		t.Logf("openwrt-package.sh:\n%s", b)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*"))
	for _, f := range files {
		var p pkg
		if format == "apk" {
			p = readAPK(t, f)
		} else {
			p = readIPK(t, f)
		}
		switch p.name {
		case "pptp-alg":
			main = p
		case "luci-app-pptp-alg":
			luci = p
		default:
			t.Errorf("unexpected package %s", f)
		}
	}
	if main.name == "" || luci.name == "" {
		t.Fatalf("want both packages in %v", files)
	}
	return main, luci
}

func readAPK(t *testing.T, file string) pkg {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := apk.Read(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	p := pkg{name: a.Info.Name, version: a.Info.Version, arch: a.Info.Arch, depends: a.Info.Depends,
		files: map[string]entry{}, scripts: map[string]string{
			"postinst": a.Scripts["post-install"], "prerm": a.Scripts["pre-deinstall"], "postrm": a.Scripts["post-deinstall"]}}
	for _, e := range a.Files {
		if !e.Dir {
			p.files["/"+e.Path] = entry{mode: e.Mode, data: e.Data}
		}
	}
	// OpenWrt's apk reads conffiles from the package's own list.
	if c, ok := p.files["/lib/apk/packages/"+p.name+".conffiles"]; ok {
		p.conffiles = strings.Fields(string(c.data))
	}
	if !strings.HasSuffix(file, "/"+p.name+"-"+p.version+".apk") {
		t.Errorf("%s: want the name NAME-VERSION.apk", file)
	}
	return p
}

// untar reads a gzipped tar into a map of clean absolute paths.
func untar(t *testing.T, b []byte) map[string]entry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	m := map[string]entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Join("/", h.Name)] = entry{mode: fs.FileMode(h.Mode).Perm(), data: data}
	}
}

func readIPK(t *testing.T, file string) pkg {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	outer := untar(t, b)
	if got := string(outer["/debian-binary"].data); got != "2.0\n" {
		t.Errorf("%s: debian-binary %q", file, got)
	}
	ctl := untar(t, outer["/control.tar.gz"].data)
	fields := map[string]string{}
	for _, line := range strings.Split(string(ctl["/control"].data), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			fields[k] = v
		}
	}
	p := pkg{name: fields["Package"], version: fields["Version"], arch: fields["Architecture"],
		files: untar(t, outer["/data.tar.gz"].data),
		scripts: map[string]string{"postinst": string(ctl["/postinst"].data), "prerm": string(ctl["/prerm"].data),
			"postrm": string(ctl["/postrm"].data)}}
	for _, d := range strings.Split(fields["Depends"], ",") {
		if d = strings.TrimSpace(d); d != "" {
			p.depends = append(p.depends, d)
		}
	}
	p.conffiles = strings.Fields(string(ctl["/conffiles"].data))
	for _, s := range []string{"/postinst", "/prerm", "/postrm"} {
		if e, ok := ctl[s]; ok && e.mode != 0o755 {
			t.Errorf("%s: control %s mode %v, want 0755", file, s, ctl[s].mode)
		}
	}
	if !strings.HasSuffix(file, "/"+p.name+"_"+p.version+"_"+p.arch+".ipk") {
		t.Errorf("%s: want the name NAME_VERSION_ARCH.ipk", file)
	}
	return p
}

// source reads a file of the repository.
func source(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkPackages(t *testing.T, format string) {
	main, luci := buildPackages(t, format)
	wantArch := openwrtArch(t)
	wantLuciArch := "noarch"
	if format == "ipk" {
		wantLuciArch = "all"
	}
	mk := string(source(t, "firmware/openwrt/pptp-alg/Makefile"))
	ver := between(mk, "PKG_VERSION:=", "\n") + "-r" + between(mk, "PKG_RELEASE:=", "\n")

	for _, c := range []struct {
		p            pkg
		name, arch   string
		depends      []string
		conffiles    []string
		files        map[string]fs.FileMode // path: mode
		fromSource   map[string]string      // path: repository file it copies
		postinst, rm []string               // what the scripts must say
		postrm       string                 // all of postrm; "" for none
	}{{
		p: main, name: "pptp-alg", arch: wantArch,
		depends:   []string{"firewall4", "kmod-nf-conntrack-netlink", "kmod-nft-nat", "kmod-nft-netdev"},
		conffiles: []string{"/etc/config/pptp-alg"},
		files: map[string]fs.FileMode{
			"/usr/sbin/pptp-alg":                                          0o755,
			"/etc/init.d/pptp-alg":                                        0o755,
			"/etc/config/pptp-alg":                                        0o600,
			"/etc/uci-defaults/pptp-alg":                                  0o644,
			"/usr/share/nftables.d/chain-pre/forward/30-pptp-alg.nft":     0o644,
			"/usr/share/nftables.d/chain-pre/input/30-pptp-alg.nft":       0o644,
			"/usr/share/nftables.d/chain-pre/input/31-pptp-alg-relay.nft": 0o644,
		},
		fromSource: map[string]string{
			"/etc/init.d/pptp-alg":                                        "firmware/openwrt/pptp-alg/files/etc/init.d/pptp-alg",
			"/etc/config/pptp-alg":                                        "firmware/openwrt/pptp-alg/files/etc/config/pptp-alg",
			"/etc/uci-defaults/pptp-alg":                                  "firmware/openwrt/pptp-alg/files/etc/uci-defaults/pptp-alg",
			"/usr/share/nftables.d/chain-pre/forward/30-pptp-alg.nft":     "firmware/openwrt/pptp-alg/files/usr/share/nftables.d/chain-pre/forward/30-pptp-alg.nft",
			"/usr/share/nftables.d/chain-pre/input/30-pptp-alg.nft":       "firmware/openwrt/pptp-alg/files/usr/share/nftables.d/chain-pre/input/30-pptp-alg.nft",
			"/usr/share/nftables.d/chain-pre/input/31-pptp-alg-relay.nft": "firmware/openwrt/pptp-alg/files/usr/share/nftables.d/chain-pre/input/31-pptp-alg-relay.nft",
		},
		postinst: []string{"default_postinst"},
		rm:       []string{"default_prerm"},
		postrm:   "#!/bin/sh\n[ -n \"${IPKG_INSTROOT}\" ] || fw4 -q reload || true\n",
	}, {
		p: luci, name: "luci-app-pptp-alg", arch: wantLuciArch,
		depends: []string{"luci-base", "pptp-alg"},
		files: map[string]fs.FileMode{
			"/www/luci-static/resources/view/pptp-alg.js":                   0o644,
			"/www/luci-static/resources/view/status/include/75_pptp-alg.js": 0o644,
			"/usr/share/luci/menu.d/luci-app-pptp-alg.json":                 0o644,
			"/usr/share/rpcd/acl.d/luci-app-pptp-alg.json":                  0o644,
			"/usr/libexec/rpcd/luci.pptp-alg":                               0o755,
			"/etc/uci-defaults/luci-pptp-alg":                               0o644,
		},
		fromSource: map[string]string{
			"/www/luci-static/resources/view/pptp-alg.js":                   "firmware/luci-app-pptp-alg/htdocs/luci-static/resources/view/pptp-alg.js",
			"/www/luci-static/resources/view/status/include/75_pptp-alg.js": "firmware/luci-app-pptp-alg/htdocs/luci-static/resources/view/status/include/75_pptp-alg.js",
			"/usr/libexec/rpcd/luci.pptp-alg":                               "firmware/luci-app-pptp-alg/root/usr/libexec/rpcd/luci.pptp-alg",
		},
		postinst: []string{"default_postinst"},
		rm:       []string{"default_prerm"},
		postrm:   "#!/bin/sh\n[ -n \"${IPKG_INSTROOT}\" ] || /etc/init.d/rpcd reload || true\n",
	}} {
		p := c.p
		if p.version != ver || p.arch != c.arch {
			t.Errorf("%s: version %q arch %q, want %q %q", c.name, p.version, p.arch, ver, c.arch)
		}
		slices.Sort(p.depends)
		if !slices.Equal(p.depends, c.depends) {
			t.Errorf("%s: depends %q, want %q", c.name, p.depends, c.depends)
		}
		if !slices.Equal(p.conffiles, c.conffiles) {
			t.Errorf("%s: conffiles %q, want %q", c.name, p.conffiles, c.conffiles)
		}
		for path, mode := range c.files {
			if e, ok := p.files[path]; !ok {
				t.Errorf("%s: no %s", c.name, path)
			} else if e.mode != mode {
				t.Errorf("%s: %s mode %v, want %v", c.name, path, e.mode, mode)
			}
		}
		for path, src := range c.fromSource {
			if !bytes.Equal(p.files[path].data, source(t, src)) {
				t.Errorf("%s: %s differs from %s", c.name, path, src)
			}
		}
		for _, s := range c.postinst {
			if !strings.Contains(p.scripts["postinst"], s) {
				t.Errorf("%s: postinst lacks %q:\n%s", c.name, s, p.scripts["postinst"])
			}
		}
		for _, s := range c.rm {
			if !strings.Contains(p.scripts["prerm"], s) {
				t.Errorf("%s: prerm lacks %q:\n%s", c.name, s, p.scripts["prerm"])
			}
		}
		if p.scripts["postrm"] != c.postrm {
			t.Errorf("%s: postrm %q, want %q", c.name, p.scripts["postrm"], c.postrm)
		}
		// /etc/config/firewall is another package's: nothing of ours
		// writes it, except the migration that undoes what 0.1.0-r1 did.
		for path, e := range p.files {
			for _, w := range []string{"commit firewall", "set firewall.", "delete firewall.", "add_list firewall.", "kernel_helper"} {
				if strings.Contains(string(e.data), w) && path != "/etc/uci-defaults/pptp-alg" {
					t.Errorf("%s: %s has %q: it writes /etc/config/firewall", c.name, path, w)
				}
			}
		}
		for name, script := range p.scripts {
			if strings.Contains(script, "kernel_helper") || strings.Contains(script, "firewall") {
				t.Errorf("%s: %s touches the firewall config:\n%s", c.name, name, script)
			}
		}
		if format == "apk" {
			// default_postinst finds the init script and uci-defaults here.
			list := string(p.files["/lib/apk/packages/"+c.name+".list"].data)
			for path := range c.files {
				if !strings.Contains(list, path+"\n") {
					t.Errorf("%s: %s not in the package's .list:\n%s", c.name, path, list)
				}
			}
		}
	}

	// The packaged binary is the one given, and runs.
	bin := main.files["/usr/sbin/pptp-alg"].data
	if want, err := os.ReadFile(routerBinary(t)); err != nil || !bytes.Equal(bin, want) {
		t.Fatalf("packaged /usr/sbin/pptp-alg is not the binary given (%v)", err)
	}
	exe := filepath.Join(t.TempDir(), "pptp-alg")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(exe, "version").CombinedOutput(); err != nil || !strings.Contains(string(out), "firmware-test") {
		t.Errorf("packaged pptp-alg version: %q, %v; want the stamped version firmware-test", out, err)
	}
}

func between(s, start, end string) string {
	_, rest, _ := strings.Cut(s, start)
	v, _, _ := strings.Cut(rest, end)
	return strings.TrimSpace(v)
}

func TestAPKPackage(t *testing.T) { checkPackages(t, "apk") }

func TestIPKPackage(t *testing.T) { checkPackages(t, "ipk") }

// TestLuciWiring checks that the menu entry, the ACL and the rpcd plugin
// name the same things: the page is reachable and every method the page
// may call is one the plugin lists.
func TestLuciWiring(t *testing.T) {
	var menu map[string]struct {
		Title   string
		Action  struct{ Type, Path string }
		Depends struct {
			ACL []string
		}
	}
	if err := json.Unmarshal(source(t, "firmware/luci-app-pptp-alg/root/usr/share/luci/menu.d/luci-app-pptp-alg.json"), &menu); err != nil {
		t.Fatalf("menu.d: %v", err)
	}
	page, ok := menu["admin/network/vpn-passthrough"]
	if !ok || page.Action.Type != "view" || page.Action.Path != "pptp-alg" || !slices.Contains(page.Depends.ACL, "luci-app-pptp-alg") {
		t.Errorf("menu.d: want admin/network/vpn-passthrough, view pptp-alg, acl luci-app-pptp-alg: %+v", menu)
	}

	var acl map[string]struct {
		Read, Write struct {
			Ubus map[string][]string
			UCI  []string
		}
	}
	if err := json.Unmarshal(source(t, "firmware/luci-app-pptp-alg/root/usr/share/rpcd/acl.d/luci-app-pptp-alg.json"), &acl); err != nil {
		t.Fatalf("acl.d: %v", err)
	}
	grant := acl["luci-app-pptp-alg"]
	read, write := grant.Read.Ubus["luci.pptp-alg"], grant.Write.Ubus["luci.pptp-alg"]
	slices.Sort(read)
	slices.Sort(write)
	if !slices.Equal(read, []string{"doctor", "log", "mappings", "status"}) || !slices.Equal(write, []string{"disable", "drop", "enable", "service"}) {
		t.Errorf("acl.d: luci.pptp-alg read %q write %q; want read doctor, log, mappings, status and write disable, drop, enable, service", read, write)
	}
	if slices.Contains(grant.Read.UCI, "firewall") || slices.Contains(grant.Write.UCI, "firewall") {
		t.Errorf("acl.d: the app has no business with /etc/config/firewall: %+v", grant)
	}
	if !slices.Contains(grant.Write.UCI, "pptp-alg") {
		t.Errorf("acl.d: no uci write on pptp-alg")
	}

	out, err := exec.Command(filepath.Join(moduleRoot(t), "firmware/luci-app-pptp-alg/root/usr/libexec/rpcd/luci.pptp-alg"), "list").Output()
	if err != nil {
		t.Fatalf("rpcd plugin list: %v", err)
	}
	var methods map[string]map[string]any
	if err := json.Unmarshal(out, &methods); err != nil {
		t.Fatalf("rpcd plugin list: %v\n%s", err, out)
	}
	for _, m := range append(read, write...) {
		if _, ok := methods[m]; !ok {
			t.Errorf("ACL grants %s, which the plugin does not list: %s", m, out)
		}
	}
	js := string(source(t, "firmware/luci-app-pptp-alg/htdocs/luci-static/resources/view/pptp-alg.js"))
	for m := range methods {
		if !strings.Contains(js, "method: '"+m+"'") {
			t.Errorf("view pptp-alg.js declares no rpc for method %s", m)
		}
	}
}
