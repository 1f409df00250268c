#!/usr/bin/env bash
# Builds static, stripped pptp-alg binaries for routers and prints each one's
# size. With no arguments it builds every target below; name targets to build
# only those (scripts/openwrt-package.sh builds one).
#
#   scripts/build-router.sh [-o DIR] [TARGET...]
#
# TARGET is one of linux/arm/5 linux/arm/7 linux/arm64 linux/mips
# linux/mipsle linux/amd64 (and linux/arm/6, which openwrt-package.sh uses
# for ARMv6 with a VFP). Binaries go to DIR (default bin/router) as
# pptp-alg-OS-ARCH[vN]. VERSION (environment) is stamped into the binary;
# by default it is derived from git.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

all_targets=(linux/arm/5 linux/arm/7 linux/arm64 linux/mips linux/mipsle linux/amd64)
out=bin/router
while (($#)); do
	case $1 in
	-o)
		out=${2:?-o needs a directory}
		shift 2
		;;
	-h | --help)
		sed -n '2,12s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	-*)
		echo "build-router: unknown option $1" >&2
		exit 2
		;;
	*) break ;;
	esac
done
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")

# version: the package version from the OpenWrt Makefile plus the commit, so
# a router's `pptp-alg version` names the exact source.
default_version() {
	local base commit
	base=$(sed -n 's/^PKG_VERSION:=//p' firmware/openwrt/pptp-alg/Makefile 2>/dev/null)
	commit=$(git rev-parse --short HEAD 2>/dev/null) || commit=unknown
	if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		commit+=-dirty
	fi
	echo "${base:-0.0.0}-g$commit"
}
version=${VERSION:-$(default_version)}
mkdir -p "$out"

n=0
for t in "${targets[@]}"; do
	n=$((n + 1))
	IFS=/ read -r goos goarch variant <<<"$t"
	env=(CGO_ENABLED=0 GOOS="$goos" GOARCH="$goarch")
	ldflags="-s -w -X main.version=$version"
	name=pptp-alg-$goos-$goarch
	case $goarch/$variant in
	arm/5 | arm/6 | arm/7)
		env+=(GOARM="$variant")
		name+=v$variant
		# 32-bit ARM Linux has 4 KiB pages: segments aligned to that
		# rather than the linker's 64 KiB make the file about 100 KiB
		# smaller.
		ldflags+=" -R 0x1000"
		;;
	mips/ | mipsle/) env+=(GOMIPS=softfloat) ;;
	arm64/ | amd64/) ;;
	*)
		echo "build-router: unknown target $t (want one of ${all_targets[*]})" >&2
		exit 2
		;;
	esac
	printf '[%d/%d] %-12s ' "$n" "${#targets[@]}" "$t"
	env "${env[@]}" go build -trimpath -buildvcs=false \
		-ldflags "$ldflags" \
		-o "$out/$name" ./cmd/pptp-alg
	size=$(stat -c %s "$out/$name")
	awk -v s="$size" -v f="$out/$name" 'BEGIN { printf "%s  %d bytes (%.2f MiB)\n", f, s, s / 1048576 }'
done
echo "version $version"
