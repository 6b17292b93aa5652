//! Fuzzes the CDR path from an untrusted document to grid fields: POST-body unwrapping (raw,
//! form, base64), the mod_json_cdr and mod_xml_cdr parsers, leg normalization, reconciliation
//! and the builder. Run with `scripts/fuzz.sh cdr_document`.
//!
//! Beyond "never panics": whatever parses into a leg builds into records whose stream numbers
//! are all digits and unique, and whose durations agree with their own times.

#![no_main]

use gridedge::cdr::builder::{build_call, CdrDirectory};
use gridedge::cdr::mapping::CdrMapping;
use gridedge::cdr::reconcile::{DocPolicy, LegSource, Reconciler};
use gridedge::cdr::record::AgentRef;
use gridedge::cdr::service::parse_document;
use gridedge::grid::cdr::{to_grid, TimeFormat};
use gridedge::switch::leg::{Leg, LegVariables};
use gridedge::switch::raw_cdr::{unwrap_post, CdrLimits, PostEncoding};
use libfuzzer_sys::fuzz_target;

struct Dir;
impl CdrDirectory for Dir {
    fn agent_at(&self, extension: &str) -> Option<AgentRef> {
        extension.starts_with('1').then(|| AgentRef {
            extension: extension.to_owned(),
            agent_id: format!("a{extension}"),
            ..AgentRef::default()
        })
    }
    fn is_extension(&self, user: &str) -> bool {
        user.len() == 4
    }
    fn skill_group(&self, key: &str) -> Option<(String, String)> {
        Some((key.to_owned(), String::new()))
    }
    fn agent_skill_group(&self, _: &str) -> Option<(String, String)> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = CdrLimits {
        max_bytes: 64 * 1024,
        ..CdrLimits::default()
    };
    let encoding = match data.first().map(|b| b % 3) {
        Some(0) => PostEncoding::Raw,
        Some(1) => PostEncoding::Form,
        _ => PostEncoding::Base64,
    };
    let body = data.get(1..).unwrap_or(&[]);
    let Ok(text) = unwrap_post(body, encoding, &limits) else {
        return;
    };
    let Ok(raw) = parse_document(&text, &limits) else {
        return;
    };
    let Ok(leg) = Leg::from_raw(&raw, &LegVariables::default()) else {
        return;
    };
    assert!(leg.times.ended_ms >= leg.times.created_ms);
    let mut r = Reconciler::new(1, DocPolicy::AllLegs, 4);
    r.add(leg, LegSource::Document, 0);
    let time = TimeFormat::default();
    for call in r.poll(u64::MAX) {
        let records = build_call(&call.legs, &Dir, &CdrMapping::default());
        let mut seen = std::collections::HashSet::new();
        for rec in &records {
            assert!(rec.stream_number.bytes().all(|b| b.is_ascii_digit()));
            assert!(
                seen.insert(rec.stream_number.clone()),
                "unique stream numbers"
            );
            assert!(rec.end_ms >= rec.start_ms || rec.duration_secs == 0);
            let fields = to_grid(rec, &time);
            assert_eq!(fields.len(), 38);
        }
    }
});
