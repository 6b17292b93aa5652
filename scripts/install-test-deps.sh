#!/usr/bin/env bash
# Installs the real peers the end-to-end tests drive (SIPp, baresip, linphone-cli) and, with
# --bench, Kamailio for the side-by-side registrar benchmark. Idempotent: only missing tools
# are installed, so a second run costs a few `command -v` calls.
set -euo pipefail

want=()
command -v sipp >/dev/null 2>&1 || want+=(sip-tester)
command -v baresip >/dev/null 2>&1 || want+=(baresip-core)
command -v linphonecsh >/dev/null 2>&1 || want+=(linphone-cli)
command -v xxd >/dev/null 2>&1 || want+=(xxd)
if [[ "${1:-}" == "--bench" ]]; then
  command -v kamailio >/dev/null 2>&1 || want+=(kamailio)
  command -v pidstat >/dev/null 2>&1 || want+=(sysstat)
fi

if ((${#want[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "install-test-deps: installing ${want[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
