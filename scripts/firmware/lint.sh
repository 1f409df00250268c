#!/usr/bin/env bash
# Static checks of what goes onto a router: shellcheck on every shell script
# (init script, uci-defaults, rpcd plugin, build scripts), node --check on
# the LuCI view and its Status > Overview panel, a JSON parse of the LuCI
# menu and rpcd ACL, the translation template against the JavaScript, the
# view's behaviour under node (scripts/firmware/view_test.js), and
# nft's parse of the fw4 includes (in a network namespace of its own).
set -euo pipefail
cd "$(dirname "$0")/../.."

shell_scripts=(
	firmware/openwrt/pptp-alg/files/etc/init.d/pptp-alg
	firmware/openwrt/pptp-alg/files/etc/uci-defaults/pptp-alg
	firmware/luci-app-pptp-alg/root/etc/uci-defaults/luci-pptp-alg
	firmware/luci-app-pptp-alg/root/usr/libexec/rpcd/luci.pptp-alg
	scripts/build-router.sh
	scripts/openwrt-package.sh
	scripts/firmware/lint.sh
	scripts/firmware/pot.sh
)
json_files=(
	firmware/luci-app-pptp-alg/root/usr/share/luci/menu.d/luci-app-pptp-alg.json
	firmware/luci-app-pptp-alg/root/usr/share/rpcd/acl.d/luci-app-pptp-alg.json
)
js_files=(
	firmware/luci-app-pptp-alg/htdocs/luci-static/resources/view/pptp-alg.js
	firmware/luci-app-pptp-alg/htdocs/luci-static/resources/view/status/include/75_pptp-alg.js
)

shellcheck "${shell_scripts[@]}"
echo "shellcheck: ${#shell_scripts[@]} scripts clean"
for f in "${js_files[@]}"; do
	node --check "$f"
done
echo "node --check: ${#js_files[@]} file(s) clean"
node -e 'for (const f of process.argv.slice(1)) JSON.parse(require("fs").readFileSync(f, "utf8"))' "${json_files[@]}"
echo "JSON: ${#json_files[@]} files parse"
scripts/firmware/pot.sh --check
# The view and the Overview panel run under node with LuCI stand-ins.
node scripts/firmware/view_test.js

# fw4 splices each include into a chain of its inet table; nft -c parses
# them there as fw4 would, without installing anything.
if command -v nft >/dev/null && unshare -n true 2>/dev/null; then
	n=0
	for f in firmware/openwrt/pptp-alg/files/usr/share/nftables.d/chain-*/*/*.nft; do
		chain=$(basename "$(dirname "$f")")
		{
			echo 'table inet fw4 {'
			echo "chain $chain {"
			cat "$f"
			echo '}'
			echo '}'
		} | unshare -n nft -c -f -
		n=$((n + 1))
	done
	echo "nft -c: $n fw4 include(s) parse"
else
	echo "nft -c: skipped (needs nft and unshare -n)"
fi
