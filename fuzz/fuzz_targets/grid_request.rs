//! Fuzzes what the grid platform sends us and what it answers: the query routes' parameter
//! parsing (JSON or form body plus query string), every request type built from them (agent
//! list with its quoted agentIds, extension list, queue list, skill groups, agent change), and
//! the outbox's reading of a push answer. Run with `scripts/fuzz.sh grid_request`.
//!
//! Beyond "never panics": an agent list never holds more than 100 ids, and a push answer is
//! delivered only when the envelope says 200.

#![no_main]

use gridedge::grid::query::{
    parse_agent_ids, AgentChange, AgentListRequest, BodyKind, ExtensionListRequest, Params,
    QueueListRequest,
};
use gridedge::outbox::judge::judge;
use gridedge::outbox::scheduler::AttemptResult;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: which content type and status; the rest splits into query and body.
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (query, body) = rest.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    let query = std::str::from_utf8(query).ok();
    let ct = match sel % 4 {
        0 => Some("application/json"),
        1 => Some("application/x-www-form-urlencoded"),
        2 => None,
        _ => Some("text/xml"),
    };
    if let Ok(kind) = BodyKind::detect(ct, body) {
        if let Ok(p) = Params::parse(query, kind, body) {
            if let Ok(req) = AgentListRequest::parse(&p, "ent-1", 1000) {
                let _ = req;
            }
            let _ = ExtensionListRequest::parse(&p, 1000);
            let _ = QueueListRequest::parse(&p, 1000);
            let _ = AgentChange::parse(&p);
        }
    }
    if let Ok(s) = std::str::from_utf8(body) {
        if let Ok(ids) = parse_agent_ids(s) {
            assert!(ids.len() <= 100, "{} agent ids accepted", ids.len());
        }
    }
    let status = 100 + u16::from(sel) * 2;
    let retry_after = query;
    match judge(status, retry_after, body) {
        AttemptResult::Delivered => {
            assert!((200..300).contains(&status));
            let v: serde_json::Value = serde_json::from_slice(body).expect("delivered means JSON");
            let code = &v["code"];
            assert!(
                code.as_u64() == Some(200) || code.as_str().map(str::trim) == Some("200"),
                "delivered with code {code}"
            );
        }
        AttemptResult::Transient { reason, .. }
        | AttemptResult::Rejected { reason }
        | AttemptResult::Unreachable { reason } => {
            assert!(reason.len() < 2048);
        }
    }
});
