#!/usr/bin/env bash
# Writes the LuCI app's translation template, po/templates/pptp-alg.pot,
# from the strings its JavaScript passes to _() (xgettext, from gettext).
# With --check it writes nothing and fails if the template is out of date.
#
#   scripts/firmware/pot.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/../.."

app=firmware/luci-app-pptp-alg
pot=$app/po/templates/pptp-alg.pot
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Sorted by file and without line numbers, so that an edit elsewhere in a
# file does not change the template.
(cd "$app" && find htdocs -name '*.js' | sort | xargs xgettext --language=JavaScript \
	--keyword=_ --keyword=N_:2,3 --from-code=UTF-8 --no-wrap --sort-by-file --add-location=file \
	--omit-header -o -) | sed '/^#, javascript-format/d' >"$out.body"
{
	printf 'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8"\n\n'
	cat "$out.body"
} >"$out"
rm -f "$out.body"

if [ "${1:-}" = --check ]; then
	if ! cmp -s "$out" "$pot"; then
		echo "pot: $pot is out of date; run scripts/firmware/pot.sh" >&2
		diff -u "$pot" "$out" | head -40 >&2 || true
		exit 1
	fi
	echo "pot: $pot is up to date"
	exit 0
fi
mkdir -p "$(dirname "$pot")"
cp "$out" "$pot"
echo "pot: wrote $pot ($(grep -c '^msgid ' "$pot") strings)"
