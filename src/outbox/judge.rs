//! Judging the grid's answer to a push (sans-IO).
//!
//! Every 网格化服务端 push answers `{"code": "200", "msg": ...}` on success (seed 000 L445-448,
//! L492-495, L565-568, L607-610); some of the grid's endpoints type `code` as an int, so both
//! "200" and 200 count. HTTP status first: 408, 429 and 5xx are worth retrying; any other
//! non-2xx status cannot get better by retrying. Within a 2xx the envelope decides the same way
//! by its code. A 2xx without a readable envelope is retried (and so eventually dead-lettered
//! as exhausted): treating it as delivered could lose a record a misbehaving proxy swallowed.

use super::scheduler::AttemptResult;

/// How much of a refusing body goes into the dead letter's reason.
const EXCERPT: usize = 200;

pub fn judge(status: u16, retry_after: Option<&str>, body: &[u8]) -> AttemptResult {
    let retry_after_ms = retry_after.and_then(parse_retry_after);
    if (200..300).contains(&status) {
        return judge_envelope(body);
    }
    let reason = format!("http {status}: {}", excerpt(body));
    if transient_status(status) {
        AttemptResult::Transient {
            reason,
            retry_after_ms,
        }
    } else {
        AttemptResult::Rejected { reason }
    }
}

fn transient_status(code: u16) -> bool {
    code == 408 || code == 429 || (500..600).contains(&code)
}

fn judge_envelope(body: &[u8]) -> AttemptResult {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return AttemptResult::Transient {
                reason: format!("2xx without a JSON envelope: {}", excerpt(body)),
                retry_after_ms: None,
            }
        }
    };
    let code = match value.get("code") {
        Some(serde_json::Value::String(s)) => s.trim().parse::<u16>().ok(),
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    };
    match code {
        Some(200) => AttemptResult::Delivered,
        Some(c) => {
            let reason = format!("envelope code {c}: {}", excerpt(body));
            if transient_status(c) {
                AttemptResult::Transient {
                    reason,
                    retry_after_ms: None,
                }
            } else {
                AttemptResult::Rejected { reason }
            }
        }
        None => AttemptResult::Transient {
            reason: format!("2xx envelope without a numeric code: {}", excerpt(body)),
            retry_after_ms: None,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not worth a date parser here: the
/// receiver's clock may differ from ours anyway). Capped at an hour.
fn parse_retry_after(v: &str) -> Option<u64> {
    let secs: u64 = v.trim().parse().ok()?;
    Some(secs.min(3600) * 1000)
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]);
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(r: &AttemptResult) -> bool {
        matches!(r, AttemptResult::Delivered)
    }

    #[test]
    fn success_envelopes_in_both_types() {
        assert!(delivered(&judge(
            200,
            None,
            br#"{"code":"200","msg":"ok"}"#
        )));
        assert!(delivered(&judge(200, None, br#"{"code":200,"msg":"ok"}"#)));
        assert!(delivered(&judge(
            201,
            None,
            br#"{"msg":"x","code":" 200 "}"#
        )));
    }

    #[test]
    fn statuses_worth_retrying() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                matches!(judge(s, None, b"busy"), AttemptResult::Transient { .. }),
                "{s}"
            );
        }
        match judge(429, Some("7"), b"") {
            AttemptResult::Transient { retry_after_ms, .. } => {
                assert_eq!(retry_after_ms, Some(7000))
            }
            other => panic!("{other:?}"),
        }
        match judge(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), b"") {
            AttemptResult::Transient { retry_after_ms, .. } => assert_eq!(retry_after_ms, None),
            other => panic!("{other:?}"),
        }
        match judge(503, Some("99999999"), b"") {
            AttemptResult::Transient { retry_after_ms, .. } => {
                assert_eq!(retry_after_ms, Some(3_600_000))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_that_reject() {
        for s in [400, 401, 403, 404, 409, 413, 422, 301, 302, 100] {
            match judge(s, None, b"{\"code\":\"400\",\"msg\":\"bad field\"}") {
                AttemptResult::Rejected { reason } => {
                    assert!(reason.starts_with(&format!("http {s}: ")), "{reason}");
                    assert!(reason.contains("bad field"));
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn envelope_codes_inside_a_2xx() {
        assert!(matches!(
            judge(200, None, br#"{"code":"500","msg":"db down"}"#),
            AttemptResult::Transient { .. }
        ));
        assert!(matches!(
            judge(200, None, br#"{"code":429}"#),
            AttemptResult::Transient { .. }
        ));
        match judge(200, None, br#"{"code":"400","msg":"ym missing"}"#) {
            AttemptResult::Rejected { reason } => {
                assert!(reason.starts_with("envelope code 400"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        for body in [
            &b""[..],
            b"ok",
            b"[]",
            br#"{"msg":"ok"}"#,
            br#"{"code":"abc"}"#,
            br#"{"code":true}"#,
            br#"{"code":-1}"#,
            br#"{"code":70000}"#,
        ] {
            assert!(
                matches!(judge(200, None, body), AttemptResult::Transient { .. }),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn reasons_are_bounded_and_printable() {
        let body = vec![b'\n'; 10_000];
        let mut with_text = body.clone();
        with_text.extend_from_slice("错误".repeat(1000).as_bytes());
        for b in [body, with_text, vec![0xff; 5000]] {
            match judge(400, None, &b) {
                AttemptResult::Rejected { reason } => {
                    assert!(reason.len() < 1000);
                    assert!(!reason.chars().any(|c| c.is_control()));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
