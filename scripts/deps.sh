#!/usr/bin/env bash
# Installs what the lab and the tests need on Debian: the real PPTP peers,
# nftables and conntrack tools, qemu-user for the cross-architecture unit
# tests, shellcheck, gettext (xgettext, for the LuCI translation template),
# qemu-system-arm, cpio and kmod (scripts/armvm boots an ARM kernel),
# the C toolchain's libraries, meson and ninja, Debian's dynamic busybox and
# Chromium (scripts/openwrt-box builds an OpenWrt userland, apk-tools v3
# and drives LuCI; it installs its npm driver itself), and the Go modules.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(nftables conntrack iproute2 pptpd pptp-linux tcpdump qemu-user-static shellcheck nodejs gettext
	qemu-system-arm cpio kmod
	cmake pkg-config libjson-c-dev liblua5.1-0-dev libssl-dev zlib1g-dev meson ninja-build libzstd-dev
	busybox xz-utils openssl chromium)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# A policy-rc.d keeps the packages' own services (pptpd) from starting.
	own_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		own_policy=1
	fi
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	[ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

if ! command -v go >/dev/null; then
	if [ -x /usr/local/go/bin/go ]; then
		export PATH=/usr/local/go/bin:$PATH
	else
		echo "deps: Go 1.26 or newer is needed (https://go.dev/doc/install)" >&2
		exit 1
	fi
fi
go mod download
