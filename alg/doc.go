// Package alg is the PPTP application-level gateway of a NAT router. It
// implements the PPTP control protocol of RFC 2637 section 2 (framing the
// TCP stream into control messages, and decoding and encoding them) and the
// call tracking that lets several LAN clients carry calls through one WAN
// address.
package alg
