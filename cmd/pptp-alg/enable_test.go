package main

import (
	"testing"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

func TestToggleText(t *testing.T) {
	st := enabledStatus()
	for _, tc := range []struct {
		cmd  string
		r    controlapi.ToggleReply
		want string
	}{
		{"enable", controlapi.ToggleReply{Changed: true, Status: st}, "pptp-alg: enabled; nftables table ip pptp_alg installed"},
		{"enable", controlapi.ToggleReply{Status: st}, "pptp-alg: already enabled"},
		{"disable", controlapi.ToggleReply{Changed: true, CallsReleased: 1, Status: st}, "pptp-alg: disabled; nftables table ip pptp_alg removed, 1 call released"},
		{"disable", controlapi.ToggleReply{Changed: true, Status: st}, "pptp-alg: disabled; nftables table ip pptp_alg removed, 0 calls released"},
		{"disable", controlapi.ToggleReply{}, "pptp-alg: already disabled"},
	} {
		if got := toggleText(tc.cmd, tc.r); got != tc.want {
			t.Errorf("%s %+v: %q, want %q", tc.cmd, tc.r, got, tc.want)
		}
	}
}
