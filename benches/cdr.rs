//! One complete call through the FreeSWITCH adapter: ESL frame decoding and event parsing,
//! live call tracking, and the CDR path (hang-up event → leg → reconciler → builder → grid
//! fields).
//!
//! The call is the real 2018 capture's A-leg (`esl-channel-hangup-complete-2018.txt`, plain,
//! 317 headers) plus its B-leg, derived from the same body by swapping the two uuids and the
//! direction (its `call_uuid` still naming the A-leg, as FreeSWITCH writes it), preceded by
//! the B-leg's CHANNEL_CREATE and CHANNEL_ANSWER and the A-leg's CHANNEL_BRIDGE frames from
//! the 2015 outbound-socket capture: five verbose frames, about 51 KB, every header
//! percent-decoded.
//!
//! `esl_decode` is the wire work alone; `call` is everything for one call. The goal in the
//! issue is 50,000 calls per second per core, i.e. 20 µs per call.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gridedge::cdr::builder::{build_call, CdrDirectory};
use gridedge::cdr::mapping::CdrMapping;
use gridedge::cdr::reconcile::{DocPolicy, LegSource, Reconciler};
use gridedge::cdr::record::AgentRef;
use gridedge::grid::cdr::{to_grid, TimeFormat};
use gridedge::switch::calls::ChannelTracker;
use gridedge::switch::esl::{EslDecoder, EslEvent};
use gridedge::switch::leg::{Leg, LegVariables};

const A: &str = "5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4";
const B: &str = "9c1afb4f-1d4a-4e45-84a3-d25721981bf5";

fn frame_plain(body: &str) -> Vec<u8> {
    let mut body = body.trim_end_matches('\n').to_owned();
    body.push_str("\n\n");
    let mut out = format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Frames `index`s of the 2015 capture (0-based over all frames).
fn capture_frames(indices: &[usize]) -> Vec<u8> {
    let full: &[u8] = include_bytes!("../tests/fixtures/freeswitch/esl-outbound-session-full.txt");
    let mut frames = Vec::new();
    let mut i = 0;
    while i < full.len() {
        let Some(end) = full[i..].windows(2).position(|w| w == b"\n\n") else {
            break;
        };
        let head = std::str::from_utf8(&full[i..i + end]).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let stop = i + end + 2 + len;
        frames.push(full[i..stop].to_vec());
        i = stop;
    }
    indices.iter().flat_map(|&k| frames[k].clone()).collect()
}

fn call_bytes() -> Vec<u8> {
    let a = include_str!("../tests/fixtures/freeswitch/esl-channel-hangup-complete-2018.txt");
    let b = a
        .replace(A, "@@A@@")
        .replace(B, A)
        .replace("@@A@@", B)
        .replace("Call-Direction: inbound", "Call-Direction: outbound")
        .replace(
            "variable_direction: inbound",
            "variable_direction: outbound",
        )
        // A B-leg keeps the call's uuid (FreeSWITCH copies call_uuid to the legs it places).
        .replace(
            &format!("variable_call_uuid: {B}"),
            &format!("variable_call_uuid: {A}"),
        )
        + &format!("\nvariable_originator: {A}\n");
    // CHANNEL_CREATE (B), CHANNEL_ANSWER (B), CHANNEL_BRIDGE (A) of the capture.
    let mut bytes = capture_frames(&[14, 16, 17]);
    bytes.extend(frame_plain(&b));
    bytes.extend(frame_plain(a));
    bytes
}

struct Dir;
impl CdrDirectory for Dir {
    fn agent_at(&self, extension: &str) -> Option<AgentRef> {
        (extension == "1002").then(|| AgentRef {
            extension: "1002".into(),
            agent_id: "a1002".into(),
            name: "张三".into(),
            org_no: "64401".into(),
            org_name: "银川供电公司".into(),
        })
    }
    fn is_extension(&self, user: &str) -> bool {
        matches!(user, "1001" | "1002" | "1003")
    }
    fn skill_group(&self, _: &str) -> Option<(String, String)> {
        None
    }
    fn agent_skill_group(&self, _: &str) -> Option<(String, String)> {
        Some(("sg-1".into(), "报修组".into()))
    }
}

fn one_call(bytes: &[u8], vars: &LegVariables, map: &CdrMapping, time: &TimeFormat) -> usize {
    let mut decoder = EslDecoder::default();
    decoder.push(bytes);
    let mut tracker = ChannelTracker::new(16, "gridedge_task");
    let mut reconciler = Reconciler::new(60_000, DocPolicy::None, 16);
    let mut presence_events = 0;
    while let Some(msg) = decoder.next_message().unwrap() {
        let ev = EslEvent::from_message(&msg).unwrap();
        presence_events += tracker.on_event(&ev, 0).len();
        if ev.name() == Some("CHANNEL_HANGUP_COMPLETE") {
            let leg = Leg::from_hangup_event(&ev, vars).unwrap();
            reconciler.add(leg, LegSource::Esl, 0);
        }
    }
    let mut fields = 0;
    for call in reconciler.poll(0) {
        for record in build_call(&call.legs, &Dir, map) {
            fields += to_grid(&record, time).len();
        }
    }
    presence_events + fields
}

fn bench(c: &mut Criterion) {
    let bytes = call_bytes();
    let vars = LegVariables::default();
    let map = CdrMapping::default();
    let time = TimeFormat::default();
    // One agent record (1002) of 38 fields, plus 4 presence events: the bench must do real work.
    assert_eq!(one_call(&bytes, &vars, &map, &time), 38 + 4);

    let mut g = c.benchmark_group("cdr");
    g.throughput(Throughput::Elements(1));
    g.bench_function("esl_decode", |b| {
        b.iter(|| {
            let mut d = EslDecoder::default();
            d.push(black_box(&bytes));
            let mut n = 0;
            while let Some(m) = d.next_message().unwrap() {
                n += EslEvent::from_message(&m).unwrap().headers().len();
            }
            n
        })
    });
    g.bench_function("call", |b| {
        b.iter(|| one_call(black_box(&bytes), &vars, &map, &time))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
