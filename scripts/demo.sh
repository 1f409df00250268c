#!/usr/bin/env bash
# The lab demo: installs what it needs (scripts/deps.sh), then builds a lab
# of LAN hosts, a router running pptp-alg and a real PPTP server, holds a
# tunnel from every host at once and prints the router's mapping table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
scripts/deps.sh
exec go run ./scripts/demo "$@"
