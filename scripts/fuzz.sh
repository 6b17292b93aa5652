#!/usr/bin/env bash
# Runs a cargo-fuzz target for a while: `scripts/fuzz.sh [sip_message|endpoint|stomp_frame|esl_frame|cdr_document|grid_request|campaign_request|rtp_packet|sdp_offer|siprec_body] [SECONDS]`.
#
# Targets: sip_message (framing, parser, typed headers, serialization round trip) and endpoint
# (the whole sans-IO request path: guard, parse, digest, registrar, reply encoding) and
# stomp_frame (the event stream's STOMP decoder with an encode/re-parse round trip, and the
# SockJS client-message parser) and esl_frame (the FreeSWITCH Event Socket decoder and event
# parsers) and cdr_document (mod_json_cdr/mod_xml_cdr documents through leg normalization,
# reconciliation and the CDR builder; seeded with the FreeSWITCH fixture CDRs) and
# grid_request (the grid's query parameters and request types, and the outbox's reading of a
# push answer) and campaign_request (the call-task, line, call-list and blacklist routes'
# parameters) and the recording server's inputs: rtp_packet (datagrams into the reorder buffer
# and decoders), sdp_offer (offer parse and answer, which must parse back) and siprec_body
# (multipart split and rs-metadata).
# libFuzzer needs nightly compiler flags; on this project's stable toolchain RUSTC_BOOTSTRAP=1
# unlocks them for the fuzz build only. Seeds live in fuzz/seeds; the corpus grows in
# fuzz/corpus/<target> (not committed).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target=${1:-sip_message}
secs=${2:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p "corpus/$target"
cp -n seeds/* "corpus/$target/" 2>/dev/null || true
cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
# CDR documents are tens of KB; the wire-protocol targets stay small.
max_len=4096
[ "$target" = cdr_document ] && max_len=65536
RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$secs" -max_len="$max_len"
