#!/usr/bin/env bash
# Boots a real 32-bit ARM kernel, Debian bookworm's armhf armmp, under
# qemu-system-arm -M virt (TCG) with an initramfs holding the linux/arm v7
# builds of the daemon, pptpsim and the test binaries of nat, conntrack and
# alg, and runs them there (scripts/armvm/init.sh says what). Prints one
# line per check and "armvm: N passed, N failed"; exits 0 when all passed,
# 1 when any failed, and 77 (skipped) when the armhf packages cannot be had
# from the Debian mirror.
#
# Everything it fetches and extracts stays under its cache directory,
# $ARMVM_CACHE (default /var/cache/pptp-alg-armvm), through an apt
# configuration of its own: the machine's dpkg architectures and apt lists
# are left alone. A second run downloads nothing. Needs qemu-system-arm,
# cpio, kmod's depmod and Go (scripts/deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH

# ARMVM_KERNEL=arm64 boots Debian's arm64 kernel instead, with the same
# 32-bit armhf user space (the kernel's COMPAT); ARMVM_GOARCH=arm64 builds
# the daemon and the tests for arm64 instead of arm v7.
kernel_arch=${ARMVM_KERNEL:-armhf}
goarch=${ARMVM_GOARCH:-arm}
cache=${ARMVM_CACHE:-/var/cache/pptp-alg-armvm}
vm_timeout=${ARMVM_TIMEOUT:-300} # seconds from boot to power-off
mirror=${ARMVM_MIRROR:-http://deb.debian.org/debian}
skip=77

say() { echo "armvm: $*"; }
start=$SECONDS

case $kernel_arch in
armhf)
	kernel_meta=linux-image-armmp qemu=(qemu-system-arm -cpu cortex-a15)
	archs=(armhf)
	;;
arm64)
	kernel_meta=linux-image-arm64:arm64 qemu=(qemu-system-aarch64 -cpu cortex-a72)
	archs=(armhf arm64)
	;;
*)
	say "ARMVM_KERNEL is armhf or arm64, not $kernel_arch"
	exit 1
	;;
esac
case $goarch in
arm) goenv=(GOARCH=arm GOARM=7) ;;
arm64) goenv=(GOARCH=arm64) ;;
*)
	say "ARMVM_GOARCH is arm or arm64, not $goarch"
	exit 1
	;;
esac

for tool in "${qemu[0]}" cpio depmod go apt-get dpkg-deb; do
	command -v "$tool" >/dev/null || { say "needs $tool (scripts/deps.sh installs it)"; exit 1; }
done

mkdir -p "$cache"
run=$(mktemp -d "$cache/run.XXXXXX")
qemu_pid=
cleanup() {
	if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
	rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- inputs: armhf .debs through a private apt configuration
apt_dir=$cache/apt
mkdir -p "$apt_dir"/{state/lists/partial,cache/archives/partial,parts,sources.d,prefs.d} "$cache/debs"
touch "$apt_dir/status"
cat >"$apt_dir/apt.conf" <<EOF
Dir::State "$apt_dir/state";
Dir::State::status "$apt_dir/status";
Dir::Cache "$apt_dir/cache";
Dir::Etc::SourceList "$apt_dir/sources.list";
Dir::Etc::SourceParts "$apt_dir/sources.d";
Dir::Etc::Parts "$apt_dir/parts";
Dir::Etc::PreferencesParts "$apt_dir/prefs.d";
APT::Architecture "armhf";
APT::Architectures { $(printf '"%s"; ' "${archs[@]}")};
APT::Sandbox::User "root";
Acquire::Retries "1";
Debug::NoLocking "true";
EOF
# The main archive is enough: the security suite's armhf index has failed
# mid-sync here before.
echo "deb [arch=$(IFS=,; echo "${archs[*]}") signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main" >"$apt_dir/sources.list"
export APT_CONFIG=$apt_dir/apt.conf

exec 9>"$cache/lock" # one run at a time fetches and extracts
flock 9

lists=$(find "$apt_dir/state/lists" -maxdepth 1 -name "*binary-${kernel_arch}_Packages*" -mmin -1440 | head -1)
if [ -z "$lists" ]; then
	have_index() { find "$apt_dir/state/lists" -maxdepth 1 -name "*binary-${kernel_arch}_Packages*" -mmin -1440 | grep -q .; }
	# apt-get update exits 0 when an index failed: the index itself counts.
	for try in 1 2 3; do
		apt-get -qq update >"$run/apt.log" 2>&1 || true
		have_index && break
		[ "$try" -lt 3 ] && sleep $((try * 5))
	done
	if ! find "$apt_dir/state/lists" -maxdepth 1 -name "*binary-${kernel_arch}_Packages*" | grep -q .; then
		say "skipped: cannot fetch the armhf package index from $mirror ($(tail -1 "$run/apt.log"))"
		exit $skip
	fi
fi

kernel_pkg=$(apt-cache depends "$kernel_meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { sub(/:.*/, "", $2); print $2; exit }')
[ -n "$kernel_pkg" ] || { say "skipped: no $kernel_meta in the index"; exit $skip; }
kver=${kernel_pkg#linux-image-}
# The tools and, from their dependencies, the shared libraries.
user_pkgs=(busybox-static netbase nftables iproute2 conntrack)
mapfile -t libs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
	--no-replaces --no-enhances nftables:armhf iproute2:armhf conntrack:armhf 2>/dev/null |
	grep -E '^(lib|zlib)[^:]*$' | grep -Ev '^lib(debian-installer|newt|slang|textwrap|readline)' | sort -u)
# deb_of PACKAGE [ARCH] is the downloaded .deb of PACKAGE for ARCH
# (armhf), or for all architectures.
deb_of() {
	{ compgen -G "$cache/debs/${1}_*_${2:-armhf}.deb" || compgen -G "$cache/debs/${1}_*_all.deb"; } | tail -1
}
missing=()
[ -n "$(deb_of "$kernel_pkg" "$kernel_arch")" ] || missing+=("$kernel_pkg:$kernel_arch")
for p in "${user_pkgs[@]}" "${libs[@]}"; do
	[ -n "$(deb_of "$p")" ] || missing+=("$p")
done
if ((${#missing[@]})); then
	say "downloading ${#missing[@]} packages"
	if ! (cd "$cache/debs" && apt-get -qq download "${missing[@]}" >"$run/apt.log" 2>&1); then
		say "skipped: cannot download the armhf packages from $mirror ($(tail -1 "$run/apt.log"))"
		exit $skip
	fi
fi

# Extracted once: the kernel, with the modules.dep its .deb lacks, and the
# user space.
kernel=$cache/kernel-$kver
if [ ! -e "$kernel/.done" ]; then
	rm -rf "$kernel"
	dpkg-deb -x "$(deb_of "$kernel_pkg" "$kernel_arch")" "$kernel"
	touch "$kernel/.done"
fi
userland=$cache/userland
mkdir -p "$userland/.extracted"
for p in "${user_pkgs[@]}" "${libs[@]}"; do
	deb=$(deb_of "$p")
	[ -e "$userland/.extracted/$(basename "$deb")" ] && continue
	dpkg-deb -x "$deb" "$userland"
	touch "$userland/.extracted/$(basename "$deb")"
done
flock -u 9
fetched=$SECONDS

# --- the project's linux/arm v7 binaries
root=$run/root
mkdir -p "$root/tests" "$root/src/nat" "$root/src/conntrack"
# The daemon as build-router.sh links it for arm: 4 KiB segment alignment.
routerflags=()
[ "$goarch" = arm ] && routerflags=(-ldflags "-R 0x1000")
build() {
	local out=$1 cmd=$2
	shift 2
	env GOOS=linux "${goenv[@]}" CGO_ENABLED=0 go "$cmd" -o "$root/tests/$out" "$@"
}
if ! { build nat.test test -c ./nat &&
	build conntrack.test test -c ./conntrack &&
	build alg.test test -c ./alg &&
	build pptp-alg build -trimpath "${routerflags[@]}" ./cmd/pptp-alg &&
	build pptpsim build ./scripts/pptpsim; }; then
	say "FAIL build: go build for linux/$goarch"
	exit 1
fi
cp -r alg "$root/src/" # its testdata: fuzz seed corpora
built=$SECONDS

# --- the initramfs
cp -a "$userland/." "$root/"
rm -rf "$root/.extracted" "$root"/usr/share/{doc,man,info,locale,lintian,bug,bash-completion}
mods=$root/lib/modules/$kver
mkdir -p "$mods/kernel/drivers/net" "$mods/kernel/lib" "$mods/kernel/crypto"
cp -a "$kernel/lib/modules/$kver/kernel/net" "$mods/kernel/"
cp -a "$kernel/lib/modules/$kver/kernel/drivers/net/"{veth,dummy,ifb}.ko "$mods/kernel/drivers/net/"
cp -a "$kernel/lib/modules/$kver/kernel/lib/"*.ko "$mods/kernel/lib/"
cp -a "$kernel/lib/modules/$kver/kernel/crypto/"*.ko "$mods/kernel/crypto/"
cp -a "$kernel/lib/modules/$kver/modules.builtin"* "$kernel/lib/modules/$kver/modules.order" "$mods/"
depmod -b "$root" "$kver"
install -m 0755 scripts/armvm/init.sh "$root/init"
mkdir -p "$root/root"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$run/initrd.gz"
packed=$SECONDS
say "kernel $kver ($kernel_arch), armhf user space, daemon and tests for linux/$goarch"
say "inputs $((fetched - start)) s, build $((built - fetched)) s, initramfs $((packed - built)) s ($(du -m "$run/initrd.gz" | cut -f1) MiB)"

# --- boot
"${qemu[@]}" -M virt -smp 2 -m 1024 -accel tcg,thread=multi \
	-nic none -display none -no-reboot -monitor none -serial stdio \
	-kernel "$kernel/boot/vmlinuz-$kver" -initrd "$run/initrd.gz" \
	-append "console=ttyAMA0 quiet loglevel=3 panic=-1" \
	</dev/null >"$run/console.log" 2>&1 &
qemu_pid=$!
boot=$SECONDS
while kill -0 "$qemu_pid" 2>/dev/null && ((SECONDS - boot < vm_timeout)); do
	sleep 1
done
timed_out=
if kill -0 "$qemu_pid" 2>/dev/null; then
	timed_out=1
	kill "$qemu_pid" 2>/dev/null || true
fi
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
vm=$((SECONDS - boot))

tr -d '\r' <"$run/console.log" >"$run/console.txt"
grep '^armvm: ' "$run/console.txt" | grep -v '^armvm: end$' || true
passed=$(grep -c '^armvm: ok ' "$run/console.txt" || true)
failed=$(grep -c '^armvm: FAIL ' "$run/console.txt" || true)
if ! grep -q '^armvm: end$' "$run/console.txt"; then
	failed=$((failed + 1))
	if [ -n "$timed_out" ]; then
		say "FAIL the VM did not finish within ${vm_timeout} s; the console's last lines:"
	else
		say "FAIL the VM stopped before the end; the console's last lines:"
	fi
	tail -40 "$run/console.txt" | sed 's/^/armvm:   /'
fi
say "$passed passed, $failed failed (VM ${vm} s, whole run $((SECONDS - start)) s)"
[ "$failed" -eq 0 ]
