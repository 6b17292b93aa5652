#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the real peers the end-to-end tests drive,
# checks formatting and lints, verifies the systemd unit, type-checks the fuzz target and runs
# every unit, property and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "installing test peers (SIPp, baresip, linphone-cli) if missing"
bash scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "systemd-analyze verify systemd/gridedge.service"
bash scripts/verify-systemd-unit.sh

step "fuzz target builds (type-check on the stable toolchain)"
cargo check --quiet --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-check --bins

step "cargo test (unit, property and end-to-end against real peers)"
cargo test --all-targets --no-fail-fast
