module github.com/pptp-alg/pptp-alg

go 1.26

require (
	github.com/google/go-cmp v0.7.0
	github.com/google/nftables v0.3.0
	github.com/gopacket/gopacket v1.7.7
	github.com/mdlayher/netlink v1.11.2
	golang.org/x/net v0.55.0
	golang.org/x/sys v0.45.0
)

require (
	github.com/mdlayher/socket v0.6.0 // indirect
	golang.org/x/sync v0.20.0 // indirect
)
