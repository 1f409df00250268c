//go:build cgo

package main

// A plain `go build` on a machine with cgo still gives one static binary.
// The net package links libc only for its cgo DNS resolver, which pptp-alg
// never calls (it resolves no names), so the linker's warning that static
// getaddrinfo needs glibc's shared libraries at run time does not apply.
// Router builds set CGO_ENABLED=0 and skip this file.

// #cgo LDFLAGS: -static
import "C"
