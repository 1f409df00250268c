#!/usr/bin/env bash
# Static checks of what goes onto a router: shellcheck on every shell script
# (init script, uci-defaults, rpcd plugin, build scripts), node --check on
# the LuCI view, and a JSON parse of the LuCI menu and rpcd ACL.
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
)
json_files=(
	firmware/luci-app-pptp-alg/root/usr/share/luci/menu.d/luci-app-pptp-alg.json
	firmware/luci-app-pptp-alg/root/usr/share/rpcd/acl.d/luci-app-pptp-alg.json
)
js_files=(firmware/luci-app-pptp-alg/htdocs/luci-static/resources/view/pptp-alg.js)

shellcheck "${shell_scripts[@]}"
echo "shellcheck: ${#shell_scripts[@]} scripts clean"
for f in "${js_files[@]}"; do
	node --check "$f"
done
echo "node --check: ${#js_files[@]} file(s) clean"
node -e 'for (const f of process.argv.slice(1)) JSON.parse(require("fs").readFileSync(f, "utf8"))' "${json_files[@]}"
echo "JSON: ${#json_files[@]} files parse"
