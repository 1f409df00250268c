package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// work is the work directory: the build cache, Chromium's driver and the
// run directories, locked against a second run at the same time.
type work struct {
	dir  string // the work directory
	repo string // the pptp-alg checkout
	run  string // this run's directory
	tmp  string // TMPDIR for everything this run starts

	modcache string // Go's module cache
	gocache  string // Go's build cache
	lock     *os.File
}

// playwrightVersion is the npm package that drives Chromium.
const playwrightVersion = "playwright-core@1.65.2"

func openWork(dir, repo string) (*work, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%s is in use by another run", dir)
	}
	w := &work{dir: dir, repo: repo, lock: lock}
	// Go's module cache (filled by scripts/deps.sh) and build cache (which
	// `go run` of this command uses already) stay where they are; HOME
	// moves into the run directory below.
	out, err := exec.Command("go", "env", "GOMODCACHE", "GOCACHE").Output()
	if err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return nil, fmt.Errorf("go env GOMODCACHE GOCACHE: %q", out)
	}
	w.modcache, w.gocache = f[0], f[1]
	w.run = filepath.Join(dir, "runs", time.Now().UTC().Format("20060102T150405Z"))
	w.tmp = filepath.Join(w.run, "tmp")
	if err := os.MkdirAll(w.tmp, 0o755); err != nil {
		return nil, err
	}
	w.prune()
	return w, nil
}

// prune keeps the last three runs.
func (w *work) prune() {
	runs, _ := filepath.Glob(filepath.Join(w.dir, "runs", "*"))
	sort.Strings(runs)
	for len(runs) > 3 {
		os.RemoveAll(runs[0])
		runs = runs[1:]
	}
}

func (w *work) close() {
	// The box's root is big and is made again each run; logs and
	// screenshots stay.
	os.RemoveAll(filepath.Join(w.run, "rootfs"))
	os.RemoveAll(w.tmp)
	w.lock.Close()
}

// env is the environment of every command the harness starts: temp files,
// npm's cache and Chromium's profile stay in the work directory.
func (w *work) env() []string {
	return append(os.Environ(),
		"GOMODCACHE="+w.modcache,
		"GOCACHE="+w.gocache,
		"TMPDIR="+w.tmp,
		"HOME="+filepath.Join(w.run, "home"),
		"npm_config_cache="+filepath.Join(w.dir, "npm-cache"),
		"PATH=/usr/local/go/bin:"+os.Getenv("PATH"))
}

// command runs name with the harness's environment and returns its output;
// a failure's error carries the output's tail.
func (w *work) command(ctx context.Context, dir string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = w.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(string(out), 30))
	}
	return string(out), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// build returns the staged userland and the source trees for src, building
// them unless the cache has them. The cache key is the hash of the sources
// and of build.sh; only the newest key is kept.
func (w *work) build(ctx context.Context, src string) (stage, srcDir string, cached bool, err error) {
	h := sha256.New()
	if err := hashPath(h, src); err != nil {
		return "", "", false, err
	}
	script := filepath.Join(w.repo, "scripts/openwrt-box/build.sh")
	if err := hashPath(h, script); err != nil {
		return "", "", false, err
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	cache := filepath.Join(w.dir, "cache", key)
	stage, srcDir = filepath.Join(cache, "stage"), filepath.Join(cache, "src")
	// The bundle holds one directory, src/, with a tree per repository.
	trees := func() string {
		if _, err := os.Stat(filepath.Join(srcDir, "src", "procd")); err == nil {
			return filepath.Join(srcDir, "src")
		}
		return srcDir
	}
	if _, err := os.Stat(filepath.Join(cache, "done")); err == nil {
		return stage, trees(), true, nil
	}
	old, _ := filepath.Glob(filepath.Join(w.dir, "cache", "*"))
	for _, d := range old {
		if d != cache {
			os.RemoveAll(d)
		}
	}
	os.RemoveAll(cache)
	if err := os.MkdirAll(srcDir, 0o755); err != nil {
		return "", "", false, err
	}
	if fi, err := os.Stat(src); err == nil && fi.IsDir() {
		if _, err := w.command(ctx, "", "cp", "-a", src+"/.", srcDir); err != nil {
			return "", "", false, err
		}
	} else if _, err := w.command(ctx, "", "tar", "-xJf", src, "-C", srcDir, "--no-same-owner"); err != nil {
		return "", "", false, err
	}
	srcDir = trees()
	fmt.Println("openwrt-box: building the userland (about a minute)")
	build := filepath.Join(cache, "build")
	if _, err := w.command(ctx, "", script, srcDir, stage, build); err != nil {
		return "", "", false, err
	}
	os.RemoveAll(build)
	if err := os.WriteFile(filepath.Join(cache, "done"), []byte(srcDir+"\n"), 0o644); err != nil {
		return "", "", false, err
	}
	return stage, srcDir, false, nil
}

// hashPath hashes a file, or every file of a tree with its path, in order.
func hashPath(h io.Writer, path string) error {
	return filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(path, p)
		if d.Type()&fs.ModeSymlink != 0 {
			t, _ := os.Readlink(p)
			fmt.Fprintf(h, "link %s %s\n", rel, t)
			return nil
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "file %s\n", rel)
		_, err = io.Copy(h, f)
		return err
	})
}
