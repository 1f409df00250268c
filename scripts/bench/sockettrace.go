package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// socketTrace records the socket and socketpair calls of one process's
// threads, through a tracefs instance of its own and the kernel's syscall
// tracepoints, which never stop the process. (strace -f --seccomp-bpf
// does: a thread that has never made a traced call stops at each of its
// system calls, so a Go daemon's sysmon stopped twice at each of its
// sleeps, and every stop counted as a wakeup.)
type socketTrace struct {
	dir string // the instance
}

const tracefs = "/sys/kernel/tracing"

var socketEvents = []string{"syscalls/sys_enter_socket", "syscalls/sys_enter_socketpair"}

// traceSockets starts recording the socket calls of pid's threads, and of
// the threads they start.
func traceSockets(pid int) (*socketTrace, error) {
	if _, err := os.Stat(filepath.Join(tracefs, "events")); err != nil {
		// Not mounted (systemd mounts it; a bare machine may not).
		unix.Mount("nodev", tracefs, "tracefs", 0, "")
	}
	for _, ev := range socketEvents {
		if _, err := os.Stat(filepath.Join(tracefs, "events", ev)); err != nil {
			return nil, fmt.Errorf("counts the daemon's sockets with tracefs's %s (a kernel with CONFIG_FTRACE_SYSCALLS, tracefs at %s): %w",
				ev, tracefs, err)
		}
	}
	t := &socketTrace{dir: filepath.Join(tracefs, "instances", fmt.Sprintf("pptp-alg-bench-%d-%d", os.Getpid(), pid))}
	if err := os.Mkdir(t.dir, 0o755); err != nil {
		return nil, err
	}
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Close()
		return nil, err
	}
	var list []string
	for _, tid := range tids {
		list = append(list, tid.Name())
	}
	writes := [][2]string{
		{"options/event-fork", "1"}, // threads started later are traced too
		{"set_event_pid", strings.Join(list, " ")},
	}
	for _, ev := range socketEvents {
		writes = append(writes, [2]string{filepath.Join("events", ev, "enable"), "1"})
	}
	for _, w := range writes {
		if err := os.WriteFile(filepath.Join(t.dir, w[0]), []byte(w[1]), 0o644); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

// traceLine is a recorded call, as tracefs prints it, in decimal or in hex
// by kernel version:
//
//	pptp-alg-812 [001] ..... 51.2: sys_socket(family: 16, type: 0x80003, protocol: 12)
//	pptp-alg-812 [001] ..... 51.2: sys_socket(family: 0x10, type: 0x80003, protocol: 0xc)
var traceLine = regexp.MustCompile(`sys_socket(?:pair)?\(family: (0x[0-9a-f]+|[0-9]+), type: [0-9a-fx]+, protocol: (0x[0-9a-f]+|[0-9]+)`)

// opened lists the kind of each socket opened so far, in order: its
// netlink protocol for a netlink socket, else its family.
func (t *socketTrace) opened() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(t.dir, "trace"))
	if err != nil {
		return nil, err
	}
	return socketKinds(string(b)), nil
}

func socketKinds(trace string) []string {
	var kinds []string
	for _, m := range traceLine.FindAllStringSubmatch(trace, -1) {
		family, _ := strconv.ParseUint(m[1], 0, 32)
		protocol, _ := strconv.ParseUint(m[2], 0, 32)
		kinds = append(kinds, socketKind(family, protocol))
	}
	return kinds
}

// Names of the socket families and netlink protocols a daemon may use.
var (
	familyNames  = map[uint64]string{1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}
	netlinkNames = map[uint64]string{0: "NETLINK_ROUTE", 4: "NETLINK_SOCK_DIAG", 9: "NETLINK_AUDIT", 12: "NETLINK_NETFILTER",
		15: "NETLINK_KOBJECT_UEVENT", 16: "NETLINK_GENERIC"}
)

func socketKind(family, protocol uint64) string {
	if family == unix.AF_NETLINK {
		if n, ok := netlinkNames[protocol]; ok {
			return n
		}
		return fmt.Sprintf("NETLINK_%d", protocol)
	}
	if n, ok := familyNames[family]; ok {
		return n
	}
	return fmt.Sprintf("AF_%d", family)
}

// Close stops the recording and removes the instance.
func (t *socketTrace) Close() error {
	for _, ev := range socketEvents {
		os.WriteFile(filepath.Join(t.dir, "events", ev, "enable"), []byte("0"), 0o644)
	}
	if err := os.Remove(t.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
