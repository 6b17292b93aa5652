#!/usr/bin/env bash
# `systemd-analyze verify` insists that ExecStart's binary exists, so the unit is checked as
# installed: with ExecStart pointing at the freshly built binary and nothing else changed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found (package systemd)" >&2; exit 1; }
cargo build --quiet --bin gridedge
bin="$(pwd)/target/debug/gridedge"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/gridedge#${bin}#" systemd/gridedge.service > "$tmp/gridedge.service"
out=$(systemd-analyze verify "$tmp/gridedge.service" 2>&1) || { echo "$out" >&2; exit 1; }
# verify exits 0 on some warnings; treat any output about our unit as a failure.
if grep -q "gridedge.service" <<<"$out"; then echo "$out" >&2; exit 1; fi
echo "systemd/gridedge.service: verified"
