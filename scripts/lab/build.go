package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

const module = "github.com/pptp-alg/pptp-alg"

// Tools are helper binaries the lab runs.
type Tools struct {
	// PPPEcho is scripts/pppecho, pptpd's stand-in for pppd.
	PPPEcho string
	// LabInit is scripts/lab/labinit, pid 1 of each lab process's PID
	// namespace.
	LabInit string
}

// BuildTools builds the helper binaries into dir with go build. Tests that
// make several labs build once (in TestMain or a shared temp dir) and pass
// the result in Options.Tools.
func BuildTools(ctx context.Context, dir string) (*Tools, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	t := &Tools{
		PPPEcho: filepath.Join(dir, "pppecho"),
		LabInit: filepath.Join(dir, "labinit"),
	}
	// One go build for both: -o names a directory when several main
	// packages are built.
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/",
		module+"/scripts/pppecho", module+"/scripts/lab/labinit")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lab: go build: %w: %s", err, out)
	}
	return t, nil
}

// ModuleRoot returns the root of the pptp-alg source tree, found by walking
// up from the working directory to its go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module "+module+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("lab: not inside the " + module + " source tree")
		}
		dir = parent
	}
}
