#!/usr/bin/env bash
# Builds installable OpenWrt packages of pptp-alg and luci-app-pptp-alg
# without the OpenWrt SDK, from a cross-built binary and the files under
# firmware/.
#
#   scripts/openwrt-package.sh --arch OPENWRT_ARCH [--format apk|ipk]
#                              [--bin FILE] [-o DIR]
#
# --arch is the router's package architecture: `apk --print-arch` on
# OpenWrt 25.12 and later, the last `opkg print-architecture` line before.
# --format apk (the default) is the apk v3 format of OpenWrt 25.12, the
# current release; ipk is for OpenWrt 24.10 and older (opkg). --bin packages
# that binary instead of building one with scripts/build-router.sh. Packages
# go to DIR (default bin/openwrt).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

format=apk arch="" bin="" out=bin/openwrt
while (($#)); do
	case $1 in
	--arch) arch=${2:?--arch needs a value}; shift 2 ;;
	--format) format=${2:?--format needs apk or ipk}; shift 2 ;;
	--bin) bin=${2:?--bin needs a file}; shift 2 ;;
	-o) out=${2:?-o needs a directory}; shift 2 ;;
	-h | --help) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "openwrt-package: unknown argument $1" >&2; exit 2 ;;
	esac
done
[ -n "$arch" ] || { echo "openwrt-package: --arch is required (apk --print-arch on the router)" >&2; exit 2; }
case $format in apk | ipk) ;; *) echo "openwrt-package: --format must be apk or ipk" >&2; exit 2 ;; esac

# The router's arch picks the Go target. ARMv7 wants a VFP; without one,
# and on older cores, ARMv5 code runs everywhere.
case $arch in
aarch64_*) target=linux/arm64 ;;
arm_arm1176jzf-s_vfp) target=linux/arm/6 ;;
arm_cortex-a*_vfp* | arm_cortex-a*_neon*) target=linux/arm/7 ;;
arm_*) target=linux/arm/5 ;;
mips_*) target=linux/mips ;;
mipsel_*) target=linux/mipsle ;;
x86_64) target=linux/amd64 ;;
*) echo "openwrt-package: no Go target for arch $arch" >&2; exit 2 ;;
esac

mk=firmware/openwrt/pptp-alg/Makefile
version=$(sed -n 's/^PKG_VERSION:=//p' "$mk")-r$(sed -n 's/^PKG_RELEASE:=//p' "$mk")
mtime=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
url=https://github.com/pptp-alg/pptp-alg
maintainer="pptp-alg developers"

work=$(mktemp -d /tmp/openwrt-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

if [ -z "$bin" ]; then
	echo "== building $target for $arch"
	# build-router.sh names its output after the target.
	scripts/build-router.sh -o "$work/bin" "$target"
	bin=$(echo "$work"/bin/pptp-alg-*)
fi

# stage_main and stage_luci lay out each package's files as on the router.
stage_main() {
	local r=$1 f=firmware/openwrt/pptp-alg/files
	install -D -m 0755 "$bin" "$r/usr/sbin/pptp-alg"
	install -D -m 0755 "$f/etc/init.d/pptp-alg" "$r/etc/init.d/pptp-alg"
	install -D -m 0600 "$f/etc/config/pptp-alg" "$r/etc/config/pptp-alg"
	install -D -m 0644 "$f/etc/uci-defaults/pptp-alg" "$r/etc/uci-defaults/pptp-alg"
	# fw4's includes, whichever chains they are for.
	local nft
	for nft in "$f"/usr/share/nftables.d/*/*/*.nft; do
		install -D -m 0644 "$nft" "$r/${nft#"$f"/}"
	done
}

stage_luci() {
	local r=$1 l=firmware/luci-app-pptp-alg js
	# The page and its Status > Overview panel.
	for js in $(cd "$l/htdocs" && find . -name '*.js'); do
		install -D -m 0644 "$l/htdocs/$js" "$r/www/${js#./}"
	done
	install -D -m 0644 "$l/root/usr/share/luci/menu.d/luci-app-pptp-alg.json" \
		"$r/usr/share/luci/menu.d/luci-app-pptp-alg.json"
	install -D -m 0644 "$l/root/usr/share/rpcd/acl.d/luci-app-pptp-alg.json" \
		"$r/usr/share/rpcd/acl.d/luci-app-pptp-alg.json"
	install -D -m 0755 "$l/root/usr/libexec/rpcd/luci.pptp-alg" "$r/usr/libexec/rpcd/luci.pptp-alg"
	install -D -m 0644 "$l/root/etc/uci-defaults/luci-pptp-alg" "$r/etc/uci-defaults/luci-pptp-alg"
}

# Package scripts hand over to OpenWrt's default_postinst and default_prerm
# (/lib/functions.sh), which run the uci-defaults and enable, start or stop
# the init scripts. After pptp-alg's removal fw4 reloads without its
# includes.
# shellcheck disable=SC2016 # text for the router's shell
postinst() { # name, format
	cat <<-EOF
		#!/bin/sh
		[ "\${IPKG_NO_SCRIPT}" = 1 ] && exit 0
		[ -s "\${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
		. "\${IPKG_INSTROOT}/lib/functions.sh"
	EOF
	[ "$2" = ipk ] || printf 'export root="${IPKG_INSTROOT}" pkgname=%s\n' "$1"
	echo 'default_postinst "$0" "$@"'
}

# shellcheck disable=SC2016
prerm() { # name, format
	cat <<-EOF
		#!/bin/sh
		[ -s "\${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
		. "\${IPKG_INSTROOT}/lib/functions.sh"
	EOF
	[ "$2" = ipk ] || printf 'export root="${IPKG_INSTROOT}" pkgname=%s\n' "$1"
	echo 'default_prerm "$0" "$@"'
}

# After removal fw4 reloads without pptp-alg's includes, and rpcd without
# the app's plugin and ACL (it reads them at start).
# shellcheck disable=SC2016
postrm() { # name
	echo '#!/bin/sh'
	case $1 in
	pptp-alg) echo '[ -n "${IPKG_INSTROOT}" ] || fw4 -q reload || true' ;;
	luci-app-pptp-alg) echo '[ -n "${IPKG_INSTROOT}" ] || /etc/init.d/rpcd reload || true' ;;
	esac
}

conffiles() { # name
	[ "$1" = pptp-alg ] && echo /etc/config/pptp-alg
	return 0
}

# build NAME ARCH DEPENDS DESCRIPTION STAGE_FUNCTION
build() {
	local name=$1 parch=$2 deps=$3 desc=$4 stage=$5 r="$work/$1" s="$work/$1.scripts" file
	mkdir -p "$r" "$s"
	"$stage" "$r"
	postinst "$name" "$format" >"$s/postinst"
	prerm "$name" "$format" >"$s/prerm"
	postrm "$name" >"$s/postrm"
	if [ "$format" = apk ]; then
		# OpenWrt's apk keeps its file lists and conffiles in the package.
		local meta="$r/lib/apk/packages" c
		mkdir -p "$meta"
		(cd "$r" && find . -path ./lib/apk -prune -o -type f -printf '/%P\n' | sort) >"$meta/$name.list"
		conffiles "$name" >"$meta/$name.conffiles"
		: >"$meta/$name.conffiles_static"
		for c in $(conffiles "$name"); do
			echo "$c $(sha256sum <"$r$c" | cut -d' ' -f1)" >>"$meta/$name.conffiles_static"
		done
		[ -s "$meta/$name.conffiles" ] || rm -f "$meta/$name.conffiles" "$meta/$name.conffiles_static"
		{ echo 'export PKG_UPGRADE=1'; sed 1d "$s/postinst"; } | sed '1i #!/bin/sh' >"$s/postupgrade"
		file="$out/$name-$version.apk"
		local postrm_arg=()
		[ -s "$s/postrm" ] && postrm_arg=(-script "post-deinstall:$s/postrm")
		[ "$parch" = all ] && parch=noarch
		go run ./scripts/firmware/mkapk -files "$r" -o "$file" -name "$name" -version "$version" \
			-arch "$parch" -depends "$deps" -description "$desc" -url "$url" \
			-maintainer "$maintainer" -origin "$name" -mtime "$mtime" \
			-script "post-install:$s/postinst" -script "post-upgrade:$s/postupgrade" \
			-script "pre-deinstall:$s/prerm" \
			${postrm_arg[@]+"${postrm_arg[@]}"}
	else
		local c="$work/$name.control"
		mkdir -p "$c"
		{
			echo "Package: $name"
			echo "Version: $version"
			[ -z "$deps" ] || echo "Depends: ${deps// /, }"
			echo "Source: firmware/$name"
			echo "SourceName: $name"
			echo "Section: net"
			echo "URL: $url"
			echo "Maintainer: $maintainer"
			echo "Architecture: $parch"
			echo "Installed-Size: $(du -sb "$r" | cut -f1)"
			echo "Description: $desc"
		} >"$c/control"
		conffiles "$name" >"$c/conffiles"
		[ -s "$c/conffiles" ] || rm "$c/conffiles"
		install -m 0755 "$s/postinst" "$c/postinst"
		install -m 0755 "$s/prerm" "$c/prerm"
		[ -s "$s/postrm" ] && install -m 0755 "$s/postrm" "$c/postrm"
		echo "2.0" >"$work/debian-binary"
		local tarflags=(--sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" --format=gnu)
		tar "${tarflags[@]}" -C "$c" -cf - . | gzip -9n >"$work/control.tar.gz"
		tar "${tarflags[@]}" -C "$r" -cf - . | gzip -9n >"$work/data.tar.gz"
		file="$out/${name}_${version}_$parch.ipk"
		tar "${tarflags[@]}" -C "$work" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz |
			gzip -9n >"$file"
	fi
	printf '%s  %d bytes\n' "$file" "$(stat -c %s "$file")"
}

build pptp-alg "$arch" "firewall4 kmod-nft-nat kmod-nft-netdev kmod-nf-conntrack-netlink" \
	"PPTP passthrough for many LAN clients at once (PPTP ALG in user space)" stage_main
build luci-app-pptp-alg all "luci-base pptp-alg" \
	"LuCI support for pptp-alg: Network > VPN Passthrough" stage_luci
