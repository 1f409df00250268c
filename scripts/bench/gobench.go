package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// goBench runs the Go benchmarks of alg and nat and parses their lines.
func (b *bench) goBench(ctx context.Context) ([]benchLine, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-count", "1", "./alg", "./nat")
	cmd.Dir = b.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %w: %s", err, out)
	}
	return parseGoBench(out), nil
}

// parseGoBench reads the benchmark lines of go test output:
//
//	pkg: github.com/pptp-alg/pptp-alg/alg
//	BenchmarkFrame-2   123   9.5 ns/op   2000 MB/s   0 B/op   0 allocs/op
func parseGoBench(out []byte) []benchLine {
	var lines []benchLine
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "pkg:" {
			pkg = f[1][strings.LastIndexByte(f[1], '/')+1:]
			continue
		}
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		l := benchLine{name: f[0], pkg: pkg}
		// Drop the -GOMAXPROCS suffix.
		if i := strings.LastIndexByte(l.name, '-'); i > 0 {
			if _, err := strconv.Atoi(l.name[i+1:]); err == nil {
				l.name = l.name[:i]
			}
		}
		var extra []string
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			switch f[i+1] {
			case "ns/op":
				l.nsPerOp = v
			case "B/op":
				l.bPerOp = v
			case "allocs/op":
				l.allocsPerOp = v
			default:
				extra = append(extra, f[i]+" "+f[i+1])
			}
		}
		l.extra = strings.Join(extra, ", ")
		lines = append(lines, l)
	}
	return lines
}
