//! Fuzzes the campaign routes' parameters (seed 004 call tasks, lines, call lists, blacklist):
//! form parsing, submitCallTask's JSON fields (callGWs, repeatConfs, outboundNumberGroups),
//! dates, dial prefixes, resultDetail lists. Run with `scripts/fuzz.sh campaign_request`.
//!
//! Beyond "never panics": whatever parses keeps its promises (rate in (0, 10], at least one
//! line with concurrency ≥ 1, prefixes safe to splice into a dial string).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Up to the first NUL: the query string; after it: the form body.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (query, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    gridedge::api::campaign::fuzz_parse(std::str::from_utf8(query).ok(), body);
});
