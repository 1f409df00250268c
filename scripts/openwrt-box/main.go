// Command openwrt-box builds the OpenWrt userland (procd, ubus, uci,
// netifd, fw4, rpcd, uhttpd, LuCI, apk-tools v3) from a source bundle, boots
// it as a router in namespaces of its own, installs pptp-alg's packages
// with apk, and checks the package as a user would use it: from the shell,
// through LuCI in headless Chromium, and with real PPTP tunnels from LAN
// hosts (pptp-linux) to a server on the WAN side (pptpd). It prints one
// line a check and `N passed, N failed`.
//
// Usage (as root, from the checkout):
//
//	go run ./scripts/openwrt-box [-src PATH] [-dir DIR] [-run REGEXP] [-v]
//
// -src is the bundle, a .tar.xz or a directory holding its src/ trees
// (default ../shared/openwrt-box/openwrt-src.tar.xz beside the checkout);
// without it the command says so in one line and exits 77 (skipped). Everything it
// writes goes under -dir (default $PPTP_ALG_BOX_DIR, else
// /var/cache/pptp-alg-openwrt-box): the build cache, keyed by the hash of
// the sources and the build script, so that a second run skips the build;
// Chromium's driver (npm); and one directory a run (runs/TIME, the last
// three kept) with the box's root, its logs and the screenshots of every
// page state. It leaves no namespace, mount or process behind.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

func main() {
	code, err := openwrtBox()
	if err != nil {
		fmt.Fprintln(os.Stderr, "openwrt-box:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func openwrtBox() (int, error) {
	root, err := lab.ModuleRoot()
	if err != nil {
		return 0, err
	}
	defDir := os.Getenv("PPTP_ALG_BOX_DIR")
	if defDir == "" {
		defDir = "/var/cache/pptp-alg-openwrt-box"
	}
	src := flag.String("src", filepath.Join(filepath.Dir(root), "shared/openwrt-box/openwrt-src.tar.xz"),
		"the OpenWrt source bundle: a .tar.xz, or a `directory` with its src/ trees")
	dir := flag.String("dir", defDir, "work `directory`: build cache, runs, screenshots; nothing is written elsewhere")
	only := flag.String("run", "", "run only the checks whose names match `regexp` (the box's own start-up always runs)")
	verbose := flag.Bool("v", false, "print every command run in the box")
	hold := flag.Bool("hold", false, "after the checks, keep the box up until interrupted (to look around with nsenter)")
	flag.Parse()

	if _, err := os.Stat(*src); err != nil {
		// 77: skipped, for scripts/test.sh.
		fmt.Printf("openwrt-box: no OpenWrt sources at %s; skipped\n", *src)
		return 77, nil
	}
	if os.Geteuid() != 0 {
		return 0, errors.New("needs root (namespaces, mounts, nftables)")
	}
	var filter *regexp.Regexp
	if *only != "" {
		if filter, err = regexp.Compile(*only); err != nil {
			return 0, fmt.Errorf("-run: %w", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	w, err := openWork(*dir, root)
	if err != nil {
		return 0, err
	}
	defer w.close()

	start := time.Now()
	stage, srcDir, cached, err := w.build(ctx, *src)
	if err != nil {
		return 0, err
	}
	built := time.Since(start)
	how := "built"
	if cached {
		how = "cached"
	}
	fmt.Printf("openwrt-box: userland %s in %s; run dir %s\n", how, built.Round(100*time.Millisecond), w.run)

	b, err := w.prepare(ctx, stage, srcDir)
	if err != nil {
		return 0, err
	}
	b.verbose = *verbose
	defer b.close()
	if err := b.boot(ctx); err != nil {
		return 0, fmt.Errorf("boot: %w", err)
	}
	fmt.Printf("openwrt-box: booted in %s (%s since start)\n", b.bootTime.Round(100*time.Millisecond),
		time.Since(start).Round(100*time.Millisecond))

	passed, failed := runChecks(ctx, b, filter)
	if *hold {
		fmt.Printf("openwrt-box: holding; the box: nsenter -t %d -m -p -n -u -i -r -w env -i PATH=/usr/sbin:/usr/bin sh; "+
			"a LAN host: ip netns exec %s-h1 ...\n", b.pid, b.name)
		<-ctx.Done()
	}
	fmt.Printf("openwrt-box: %s in all; screenshots in %s\n", time.Since(start).Round(100*time.Millisecond), b.out)
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1, nil
	}
	return 0, nil
}
