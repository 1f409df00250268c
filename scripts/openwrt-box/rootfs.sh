#!/usr/bin/env bash
# Lays out the box's root filesystem from the staged build and the bundle's
# package files, as OpenWrt's packages install them: base-files, procd,
# ubox, uci, rpcd, uhttpd, netifd, firewall4 and LuCI, with Debian's dynamic
# busybox for the shell and applets and the host's nft, which fw4 runs.
#
#   MKAPK=PATH scripts/openwrt-box/rootfs.sh SRC_DIR STAGE_DIR ROOTFS
#
# MKAPK is scripts/firmware/mkapk, built: it makes the empty packages that
# stand, in apk's database, for what the box has installed.
#
# Every link in ROOTFS is relative or points inside it once chrooted; a
# path is removed before anything is copied over it, so no copy can write
# through a link to the host.
set -euo pipefail
src=$(realpath "$1") stage=$(realpath "$2") root=$3
pkg=$src/openwrt/package
rm -rf "$root"
mkdir -p "$root"
root=$(realpath "$root")

# Merged /usr, /var on /tmp, as on OpenWrt.
mkdir -p "$root"/usr/{bin,sbin,lib} "$root"/{etc,proc,sys,dev,tmp,root,www,overlay,mnt}
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib "$root/lib64"
ln -s tmp "$root/var"
chmod 1777 "$root/tmp"

# put SRC_TREE: copies a tree into the root, following the root's own
# directory links (bin -> usr/bin) instead of replacing them.
put() {
	tar -C "$1" -cf - . | tar -C "$root" -xf - --keep-directory-symlink --no-same-owner
}

put "$stage"
rm -rf "$root/usr/include" "$root"/usr/lib/*.a "$root/usr/lib/pkgconfig" "$root/usr/share/man"
ln -sf jsonpath "$root/usr/bin/jsonfilter"
# cmake installs into usr/bin or usr/sbin where OpenWrt's Makefiles pick
# /sbin/uci, /usr/sbin/uhttpd and so on; with merged /usr both names work.
for f in "$root"/usr/bin/* "$root"/usr/sbin/*; do
	case $f in "$root"/usr/bin/*) other=sbin ;; *) other=bin ;; esac
	n=${f##*/}
	[ -e "$root/usr/$other/$n" ] || ln -s "../${f#"$root"/usr/}" "$root/usr/$other/$n"
done
mkdir -p "$root/usr/lib/rpcd"
mv "$root/usr/lib/luci.so" "$root/usr/lib/rpcd/luci.so"

put "$pkg/base-files/files"
# base-files' Makefile fills in the init PATH.
sed -i 's#%PATH%#/usr/sbin:/usr/bin:/sbin:/bin#g' "$root/sbin/hotplug-call" "$root/etc/profile" "$root/etc/preinit"
mkdir -p "$root/lib/functions" "$root/lib/config" "$root/etc/init.d" "$root/etc/config" "$root/etc/rc.d"
install -m 0644 "$pkg/system/procd/files/procd.sh" "$root/lib/functions/procd.sh"
install -m 0755 "$pkg/system/procd/files/service" "$pkg/system/procd/files/reload_config" "$root/sbin/"
install -m 0644 "$pkg/system/procd/files/hotplug.json" "$root/etc/hotplug.json"
install -m 0644 "$pkg/system/uci/files/lib/config/uci.sh" "$root/lib/config/uci.sh"
install -m 0755 "$pkg/system/ubox/files/log.init" "$root/etc/init.d/log"
: >"$root/etc/modules.conf"
install -m 0755 "$pkg/system/rpcd/files/rpcd.init" "$root/etc/init.d/rpcd"
install -m 0644 "$pkg/system/rpcd/files/rpcd.config" "$root/etc/config/rpcd"
install -D -m 0644 "$src/rpcd/unauthenticated.json" "$root/usr/share/rpcd/acl.d/unauthenticated.json"
install -m 0755 "$pkg/network/services/uhttpd/files/uhttpd.init" "$root/etc/init.d/uhttpd"
# uhttpd without TLS, serving LuCI through ucode.
sed -e '/listen_https/d' -e '/lua_prefix/d' -e 's/rfc1918_filter 1/rfc1918_filter 0/' \
	-e '/cgi_prefix/a\	list ucode_prefix "/cgi-bin/luci=/usr/share/ucode/luci/uhttpd.uc"' \
	"$pkg/network/services/uhttpd/files/uhttpd.config" >"$root/etc/config/uhttpd"
put "$pkg/network/config/netifd/files"
install -m 0644 "$src"/netifd/scripts/{netifd-proto.sh,netifd-wireless.sh,utils.sh} "$root/lib/netifd/"
put "$src/firewall4/root"

# LuCI as luci.mk lays out a module: htdocs at /www, root at /, ucode at
# /usr/share/ucode/luci.
for m in "$src"/luci/modules/* "$src"/luci/themes/*; do
	[ -d "$m/htdocs" ] && { mkdir -p "$root/www"; tar -C "$m/htdocs" -cf - . | tar -C "$root/www" -xf - --no-same-owner; }
	[ -d "$m/root" ] && put "$m/root"
	[ -d "$m/ucode" ] && { mkdir -p "$root/usr/share/ucode/luci"; tar -C "$m/ucode" -cf - . | tar -C "$root/usr/share/ucode/luci" -xf - --no-same-owner; }
done

# The bundle's LuCI (2024) connects to ubus when uhttpd loads it, in
# uhttpd's own process; the bundle's ucode (2026) adds every ubus connection
# to the process's uloop, which is uhttpd's. Each request's forked child
# then shares that socket with uhttpd, which reads the child's replies, and
# every LuCI request hangs. The box's dispatcher connects once in each
# request's child instead.
d=$root/usr/share/ucode/luci/dispatcher.uc
sed -i -e 's/^let ubus = connect();$/let ubus = null, ubus_in_request = false;/' \
	-e 's/^dispatch = function(_http, path) {$/&\n\tif (!ubus_in_request) { ubus = connect(); ubus_in_request = true; }/' "$d"
grep -q 'ubus_in_request = true' "$d"

# Debian's dynamic busybox: its static build would prefer its own applets
# (ip, logread) to the box's programs. Applets are relative links, made
# only where the box has no program of that name.
install -m 0755 /bin/busybox "$root/usr/bin/busybox"
for a in $(/bin/busybox --list-full); do
	n=${a##*/} d=usr/bin
	case $a in sbin/* | usr/sbin/*) d=usr/sbin ;; esac
	[ -e "$root/usr/bin/$n" ] || [ -e "$root/usr/sbin/$n" ] && continue
	if [ $d = usr/bin ]; then ln -s busybox "$root/$d/$n"; else ln -s ../bin/busybox "$root/$d/$n"; fi
done
# Programs the box needs that Debian's busybox lacks.
for p in /usr/sbin/nft /usr/bin/flock /usr/bin/pgrep; do
	rm -f "$root/usr/bin/${p##*/}" "$root/usr/sbin/${p##*/}"
	install -m 0755 "$p" "$root${p/#\/bin/\/usr\/bin}"
done
rm -f "$root/usr/bin/ip" "$root/usr/sbin/ip"
install -m 0755 /usr/bin/ip "$root/usr/sbin/ip" 2>/dev/null || install -m 0755 /sbin/ip "$root/usr/sbin/ip"

# Shared libraries of every ELF, at the host's paths (under the merged /usr).
find "$root/usr" -type f -perm -u+x -o -type f -name '*.so*' | while read -r f; do
	head -c4 "$f" | grep -q ELF || continue
	LD_LIBRARY_PATH=$root/usr/lib ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib/{print $1}'
done | sort -u | while read -r lib; do
	case $lib in "$root"/*) continue ;; esac
	real=$(realpath "$lib")
	# /lib and /lib64 are both usr/lib in the box.
	dest=${lib#/usr}
	dest=$root/usr/lib/${dest#/lib*/}
	mkdir -p "$(dirname "$dest")"
	[ -e "$dest" ] || install -m 0755 "$real" "$dest"
done
ldconfig -r "$root"

# No kernel modules, no flash, no console to ask on: preinit and udevtrigger
# are for real hardware (udevtrigger would write to the host's /sys).
printf '#!/bin/sh\nexit 0\n' >"$root/etc/preinit"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/sbin/udevtrigger"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/sbin/mount_root"
chmod 0755 "$root/etc/preinit" "$root/usr/sbin/udevtrigger" "$root/usr/sbin/mount_root"
sed -i '/askconsole/d' "$root/etc/inittab"

# Services enabled as `/etc/init.d/NAME enable` does it.
for s in boot system sysctl log rpcd network firewall uhttpd "done"; do
	f=$root/etc/init.d/$s
	[ -e "$f" ] || { echo "rootfs: no init script $s" >&2; exit 1; }
	start=$(sed -n 's/^START=//p' "$f") stop=$(sed -n 's/^STOP=//p' "$f")
	[ -z "$start" ] || ln -sf "../init.d/$s" "$root/etc/rc.d/S$start$s"
	[ -z "$stop" ] || ln -sf "../init.d/$s" "$root/etc/rc.d/K$stop$s"
done
# The board: two LAN ports on the br-lan bridge and a WAN port, as
# board.d's ucidef_set_interfaces_lan_wan describes a small router;
# config_generate makes the stock /etc/config/network from it at first boot.
cat >"$root/etc/board.json" <<'J'
{
	"model": { "id": "pptp-alg,box", "name": "pptp-alg box" },
	"network": {
		"lan": { "ports": [ "lan1", "lan2" ], "protocol": "static" },
		"wan": { "device": "wan", "protocol": "dhcp" }
	}
}
J
# Bridged traffic skips iptables/nftables' inet hooks on OpenWrt: its
# kmod-br-netfilter, where installed, ships these settings. The host's
# kernel has br_netfilter loaded, and a new namespace starts with them on.
mkdir -p "$root/etc/sysctl.d"
printf 'net.bridge.bridge-nf-call-%s=0\n' arptables ip6tables iptables >"$root/etc/sysctl.d/11-br-netfilter.conf"

# LuCI's login: root with the password "box".
hash=$(openssl passwd -6 -salt pptpalgbox box)
sed -i "s|^root:[^:]*:|root:$hash:|" "$root/etc/shadow"
# apk's database, as an image built with apk has it: each part of the box
# is an installed package (empty here: its files are already in place),
# so that apk resolves the dependencies of the packages under test.
stubs=$(mktemp -d "$root.stubs.XXXXXX")
mkdir -p "$stubs/empty" "$root/etc/apk"
echo x86_64 >"$root/etc/apk/arch"
for n in base-files busybox procd ubus ubusd uci libubox netifd rpcd uhttpd ucode jsonfilter \
	firewall4 nftables-json kmod-nft-nat kmod-nft-netdev kmod-nf-conntrack-netlink \
	luci-base luci-mod-network luci-mod-status luci-mod-system luci-theme-bootstrap rpcd-mod-luci apk-openssl; do
	"${MKAPK:?MKAPK names scripts/firmware/mkapk, built}" -files "$stubs/empty" -o "$stubs/$n.apk" \
		-name "$n" -version 0-r0 -arch x86_64 -description "part of the pptp-alg box"
done
"$stage/usr/bin/apk" --root "$root" add --initdb --allow-untrusted --no-network --no-scripts \
	--no-cache "$stubs"/*.apk >"$stubs/log" 2>&1 || { cat "$stubs/log"; exit 1; }
rm -rf "$stubs"

echo "rootfs: $(du -sh "$root" | cut -f1) in $root"
