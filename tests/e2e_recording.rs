//! Call recording (issue 7) end to end, black-box, written from `recording-contract.md`
//! ("Config" and "Observable behaviour"): real peers (baresip, SIPp) or our own scripted
//! UAC/RTP sender call a recording URI of the real daemon; the test then finds the recording
//! through the signed listing route (`GET /gridedge/recordings?callId=`), downloads it through
//! the grid's 录音下载 route (`/grid/recording/download`, `recordId`), and measures the
//! decrypted WAV against the audio it sent (cross-correlation, SNR, Goertzel per channel).
//!
//! Run: `scripts/install-test-deps.sh && cargo test --test e2e_recording` (baresip-core brings
//! the g711/g722/opus/aufile/menu modules and libopus0; SIPp's `play_pcap_audio` sends through
//! a raw socket, so the SIPREC test needs root or CAP_NET_RAW; that test also builds the
//! `rtp_load` example, which plays the second SIPREC stream).
//!
//! Every daemon gets its own RTP port range, drawn at random below the Linux ephemeral range
//! so parallel tests and client sockets do not collide. Waits are polls on observable state
//! (SIP responses, metrics, the listing); the only timed waits are media pacing.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/baresip.rs"]
mod baresip;
mod common;
#[path = "support/mgmt.rs"]
mod mgmt;
#[path = "support/pcap.rs"]
mod pcap;
#[path = "support/rtp_peer.rs"]
mod rtp_peer;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use audio::*;
use common::*;
use rtp_peer::*;

/// Minimum normalized cross-correlation between the source (decimated to 8 kHz) and the
/// recorded channel. G.711 quantisation noise is ~ -38 dB and G.722 at 64 kbit/s keeps the
/// 300-3000 Hz band almost intact, so 0.9 leaves room for the jitter buffer's edges and the
/// 16 -> 8 kHz resampler. Opus is a perceptual codec (phase is not preserved exactly) decoded
/// at 8 kHz, hence 0.8.
const MIN_CORR_G711: f64 = 0.9;
const MIN_CORR_G722: f64 = 0.9;
const MIN_CORR_OPUS: f64 = 0.8;
/// Our own G.711 encoder straight into the recorder: anything below this is a placement bug.
const MIN_CORR_EXACT: f64 = 0.98;
/// A silent channel: no sample louder than this (µ-law's smallest steps are ±8).
const SILENT_PEAK: i16 = 64;
/// How long the recording may take to be finalized, transcoded, encrypted and indexed.
const INDEX_WAIT: Duration = Duration::from_secs(20);
const LISTING: &str = "/gridedge/recordings";
const DOWNLOAD: &str = "/grid/recording/download";

// ------------------------------------------------------------------------------------------
// Daemon config
// ------------------------------------------------------------------------------------------

/// A random RTP port range of 200 ports in 20000..32000 (under the ephemeral range).
fn port_range() -> (u16, u16) {
    let base = 20000 + 200 * (rand::random::<u16>() % 60);
    (base, base + 199)
}

/// Management (listing) + grid defaults (loopback, no auth) + `[recording]` with `extra`
/// lines inside the section.
fn rec_config(extra: &str) -> String {
    let (min, max) = port_range();
    format!(
        r#"{mgmt}
[recording]
enabled = true
uris = ["record"]
media_ip = "127.0.0.1"
rtp_port_min = {min}
rtp_port_max = {max}
formats = ["wav"]
workers = 2
{extra}
"#,
        mgmt = mgmt::default_config()
    )
}

fn start(extra: &str) -> Daemon {
    Daemon::start(&rec_config(extra))
}

// ------------------------------------------------------------------------------------------
// Listing and download
// ------------------------------------------------------------------------------------------

/// The listing's entries for `call_id` (an empty list while none is indexed yet).
fn listing(d: &Daemon, call_id: &str) -> Vec<Value> {
    let r = mgmt::Mgmt::new(d.listeners.http).get(LISTING, &[("callId", call_id)]);
    match r.ok(&format!("listing callId={call_id}")) {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => d.fail(&format!("listing data is not an array: {other}")),
    }
}

/// Polls the listing until `call_id` has an entry with `status`; returns it.
fn await_recording(d: &Daemon, call_id: &str, status: &str) -> Value {
    let mut last = Vec::new();
    let found = poll_until(INDEX_WAIT, || {
        last = listing(d, call_id);
        last.iter()
            .find(|r| {
                r["status"] == status && r["formats"].as_array().is_some_and(|f| !f.is_empty())
            })
            .cloned()
    });
    found.unwrap_or_else(|| {
        d.fail(&format!(
            "no {status} recording indexed for callId {call_id} within {INDEX_WAIT:?}; \
             listing: {last:?}\nmetrics:\n{}",
            recording_metrics(d)
        ))
    })
}

/// Asserts the listing fields the contract names, for a recording of `call_id`.
fn check_listing_entry(d: &Daemon, e: &Value, call_id: &str, record_id: Option<&str>) {
    for key in [
        "recordId",
        "callId",
        "agent",
        "participants",
        "startTime",
        "endTime",
        "durationMs",
        "codec",
        "status",
        "formats",
    ] {
        if e.get(key).is_none() {
            d.fail(&format!("listing entry has no {key:?}: {e}"));
        }
    }
    assert_eq!(e["callId"], call_id, "{e}");
    if let Some(id) = record_id {
        assert_eq!(e["recordId"], id, "listing recordId vs X-Recording-Id: {e}");
    }
    let wav = e["formats"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["format"] == "wav"))
        .unwrap_or_else(|| d.fail(&format!("no wav format listed: {e}")));
    assert!(wav["size"].as_u64().is_some_and(|s| s > 44), "{e}");
    assert!(
        wav["sha256"]
            .as_str()
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())),
        "sha256 must be 64 hex digits: {e}"
    );
}

/// Only the recording metrics (for failure messages).
fn recording_metrics(d: &Daemon) -> String {
    d.metrics()
        .lines()
        .filter(|l| l.contains("gridedge_recording"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A binary-safe HTTP/1.1 answer.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]).into_owned();
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// POSTs `{"recordId": id}` to the grid's download route with extra headers (e.g. Range).
fn download_raw(d: &Daemon, record_id: &str, extra: &[(&str, &str)]) -> RawResponse {
    let body = json!({ "recordId": record_id }).to_string();
    let addr = d.listeners.http;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| d.fail(&format!("connect {addr}: {e}")));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "POST {DOWNLOAD} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        if raw.is_empty() {
            d.fail(&format!("download {record_id}: {e}"));
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| d.fail(&format!("download {record_id}: no header end")));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut r = RawResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if r.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        r.body = dechunk(&r.body);
    } else if let Some(n) = r.header("content-length").and_then(|v| v.parse().ok()) {
        r.body.truncate(n);
    }
    r
}

/// The listed SHA-256 (of the plaintext) of the entry's wav format.
fn listed_sha256(entry: &Value) -> Option<String> {
    entry["formats"]
        .as_array()?
        .iter()
        .find(|f| f["format"] == "wav")?["sha256"]
        .as_str()
        .map(str::to_ascii_lowercase)
}

/// Downloads and parses the recording of a listing entry: stereo, 8 kHz, 16-bit WAV (the
/// contract's timeline) whose SHA-256 is the one listed (the index hashes the plaintext).
fn download_wav(d: &Daemon, entry: &Value) -> (Vec<u8>, Wav) {
    use sha2::Digest as _;
    let record_id = entry["recordId"]
        .as_str()
        .unwrap_or_else(|| d.fail(&format!("listing entry without recordId: {entry}")));
    let r = download_raw(d, record_id, &[]);
    if r.status != 200 {
        d.fail(&format!(
            "download {record_id}: HTTP {} {:?} {}",
            r.status,
            r.headers,
            String::from_utf8_lossy(&r.body[..r.body.len().min(500)])
        ));
    }
    let wav = read_wav(&r.body).unwrap_or_else(|e| {
        d.fail(&format!(
            "download {record_id}: {e} ({} bytes)",
            r.body.len()
        ))
    });
    assert_eq!(
        wav.spec.channels, 2,
        "recordings are stereo: {:?}",
        wav.spec
    );
    assert_eq!(
        wav.spec.sample_rate, 8000,
        "the wav format is 8 kHz: {:?}",
        wav.spec
    );
    let got = hex::encode(sha2::Sha256::digest(&r.body));
    assert_eq!(
        Some(got),
        listed_sha256(entry),
        "downloaded bytes do not hash to the listed sha256: {entry}"
    );
    (r.body, wav)
}

// ------------------------------------------------------------------------------------------
// Plain calls with our own RTP
// ------------------------------------------------------------------------------------------

/// A PCMU call from `from_user`: INVITE, 200 (with X-Recording-Id), ACK. Returns the call,
/// the record id and the RTP destination of the (single) accepted line.
fn plain_call(d: &Daemon, from_user: &str, rtp_port: u16) -> (RecCall, String, SocketAddr) {
    let mut call = RecCall::new(d.listeners.udp(), "record", from_user);
    let offer = sdp_offer(
        "127.0.0.1".parse().unwrap(),
        &[MediaLine::new(rtp_port, &[PCMU, TEL_EVENT])],
    );
    let r = call
        .invite_sdp(&offer)
        .unwrap_or_else(|| d.fail("no final answer to the recording INVITE"));
    if r.code != 200 {
        d.fail(&format!("recording INVITE not answered 200:\n{}", r.raw));
    }
    let id = recording_id(&r);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let (_, lines) = parse_answer(&body);
    assert_eq!(lines.len(), 1, "one answered m= per offered line:\n{body}");
    assert_eq!(
        lines[0].direction.as_deref(),
        Some("recvonly"),
        "the answer is recvonly:\n{body}"
    );
    assert!(lines[0].formats.contains(&0), "PCMU accepted:\n{body}");
    let dst = rtp_targets(&r)[0].unwrap_or_else(|| d.fail(&format!("line refused:\n{body}")));
    (call, id, dst)
}

fn rtp_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind RTP socket")
}

fn bye_ok(d: &Daemon, call: &mut RecCall) {
    match call.bye() {
        Some(r) if r.code == 200 => {}
        other => d.fail(&format!("BYE not answered 200: {other:?}")),
    }
}

/// Waits until no recording is active (the metric the contract names).
fn await_idle(d: &Daemon) {
    if poll_until(INDEX_WAIT, || {
        (d.metric("gridedge_recording_active", &[]).unwrap_or(-1.0) == 0.0).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "gridedge_recording_active did not return to 0\n{}",
            recording_metrics(d)
        ));
    }
}

fn packets_metric(d: &Daemon, result: &str) -> f64 {
    d.metric(
        "gridedge_recording_packets_total",
        &[&format!("result=\"{result}\"")],
    )
    .unwrap_or(0.0)
}

// ------------------------------------------------------------------------------------------
// 1. baresip plays a known file, per codec
// ------------------------------------------------------------------------------------------

/// baresip 1.0 with the aufile source: `audio_source aufile,<wav>` and
/// `ausrc_srate`/`ausrc_channels` equal to the file's, so aufile accepts it (it refuses a
/// file whose rate or channel count differs from the source parameters) and baresip resamples
/// to the codec itself. No player module is loaded: the daemon answers recvonly and baresip
/// starts no player when none is registered. `menu.so` provides `/dial` for `-e`.
struct BaresipCaller {
    proc: ProcGuard,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl BaresipCaller {
    fn dial(target: &str, codec_module: &str, codec: &str, wav: &Path, rate: u32) -> Self {
        let bin = require_tool("baresip");
        let dir = tempfile::Builder::new()
            .prefix("gridedge-baresip-rec-")
            .tempdir()
            .unwrap();
        let cfg = dir.path().join("cfg");
        fs::create_dir_all(&cfg).unwrap();
        fs::write(
            cfg.join("config"),
            format!(
                "sip_listen\t127.0.0.1:0\n\
                 module_path\t/usr/lib/baresip/modules\n\
                 audio_source\taufile,{wav}\n\
                 ausrc_srate\t{rate}\n\
                 ausrc_channels\t1\n\
                 audio_buffer\t20-160\n\
                 module\t{codec_module}\n\
                 module\taufile.so\n\
                 module_app\taccount.so\n\
                 module_app\tmenu.so\n",
                wav = wav.display()
            ),
        )
        .unwrap();
        // "caller" is not an extension: the caller is the customer (left channel).
        fs::write(
            cfg.join("accounts"),
            format!("<sip:caller@127.0.0.1;transport=udp>;regint=0;audio_codecs={codec}\n"),
        )
        .unwrap();
        let out = dir.path().join("baresip.out");
        let log = fs::File::create(&out).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-s")
            .args(["-e", &format!("/dial {target}")])
            .args(["-t", "60"])
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn baresip");
        BaresipCaller {
            proc: ProcGuard::new("baresip", child),
            out,
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        read_lossy(&self.out)
    }
}

/// Which codec the test drives: baresip module, account codec name, source file rate,
/// threshold.
struct CodecCase {
    module: &'static str,
    name: &'static str,
    rate: u32,
    min_corr: f64,
    listed: &'static str,
}

fn baresip_round_trip(case: CodecCase) {
    require_tool("baresip");
    let d = start("");
    const SECS: f64 = 4.0;
    let src = test_signal(case.rate, SECS);
    let tmp = tempfile::tempdir().unwrap();
    let wav_path = tmp.path().join(format!("source-{}.wav", case.rate));
    write_wav(&wav_path, case.rate, &src);

    let target = format!("sip:record@{}", d.listeners.udp());
    let mut b = BaresipCaller::dial(&target, case.module, case.name, &wav_path, case.rate);

    // The call is up once the daemon counts an active recording.
    if poll_until(Duration::from_secs(10), || {
        (d.metric("gridedge_recording_active", &[]).unwrap_or(0.0) >= 1.0).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "baresip's call to {target} never became an active recording\n--- baresip:\n{}",
            tail(&b.output(), 12000)
        ));
    }
    // baresip 1.0 ends the call (BYE) when aufile reaches the end of the file ("Call ...
    // terminated (duration: N secs)"); "aufile: end of file" is also printed once at load
    // time, so it is no signal. Should baresip keep the call up, SIGTERM makes it hang up.
    let up = Instant::now();
    let ended = poll_until(Duration::from_secs_f64(SECS + 10.0), || {
        (d.metric("gridedge_recording_active", &[]).unwrap_or(1.0) == 0.0).then_some(())
    });
    // How long the call lasted as seen from here (within the polls' granularity): baresip
    // keeps the call up a moment after its file ends, longer on a loaded machine.
    let call_secs = up.elapsed().as_secs_f64();
    if ended.is_none() {
        eprintln!(
            "baresip did not hang up at the end of its file: SIGTERM\n{}",
            tail(&b.output(), 4000)
        );
        b.proc.terminate(Duration::from_secs(10));
    }
    await_idle(&d);
    let trace = b.output();
    let call_id = trace
        .lines()
        .find_map(|l| {
            l.strip_prefix("Call-ID:")
                .or_else(|| l.strip_prefix("i:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| d.fail(&format!("no Call-ID in baresip's trace:\n{trace}")));
    let rec_id = trace.lines().find_map(|l| {
        l.strip_prefix("X-Recording-Id:")
            .map(|v| v.trim().to_string())
    });

    let entry = await_recording(&d, &call_id, "complete");
    check_listing_entry(&d, &entry, &call_id, rec_id.as_deref());
    let codec = entry["codec"].as_str().unwrap_or("");
    assert!(
        codec
            .to_ascii_lowercase()
            .contains(&case.listed.to_ascii_lowercase()),
        "listed codec {codec:?}, want {}: {entry}",
        case.listed
    );
    let (_, wav) = download_wav(&d, &entry);

    let reference = to_8k(&src, case.rate);
    let customer = &wav.channels[0];
    let agent = &wav.channels[1];
    let a = align(&reference, customer);
    eprintln!(
        "{}: correlation {:.4}, SNR {:.1} dB, lag {} samples, recording {:.2} s",
        case.name,
        a.correlation,
        a.snr_db,
        a.lag,
        wav.duration_secs()
    );
    assert!(
        a.correlation >= case.min_corr,
        "{}: customer channel correlates {:.4} < {} with the source ({a:?})",
        case.name,
        a.correlation,
        case.min_corr
    );
    // The whole source is there, and nothing beyond the call: what follows the source (the
    // moment between baresip's end of file and its BYE) is silence, not repeated audio.
    assert!(
        wav.duration_secs() >= SECS - 0.5 && wav.duration_secs() <= call_secs + 1.0,
        "{}: recording lasts {:.2} s, source {SECS} s, call {call_secs:.2} s",
        case.name,
        wav.duration_secs()
    );
    // 20 ms of guard after the source's end: a codec's filter tail is not repeated audio.
    let source_end = (a.lag + reference.len() + 160).min(customer.len());
    assert!(
        peak(&customer[source_end..]) <= SILENT_PEAK,
        "{}: {} samples after the source's end are not silent (peak {})",
        case.name,
        customer.len() - source_end,
        peak(&customer[source_end..])
    );
    let dur_ms = entry["durationMs"].as_f64().unwrap_or(-1.0);
    assert!(
        (dur_ms / 1000.0 - wav.duration_secs()).abs() <= 0.5,
        "durationMs {dur_ms} vs WAV {:.2} s",
        wav.duration_secs()
    );
    assert!(
        peak(agent) <= SILENT_PEAK,
        "{}: the agent channel must be silent (peak {})",
        case.name,
        peak(agent)
    );
}

#[test]
fn baresip_pcmu_recording_matches_source() {
    baresip_round_trip(CodecCase {
        module: "g711.so",
        name: "PCMU",
        rate: 8000,
        min_corr: MIN_CORR_G711,
        listed: "PCMU",
    });
}

#[test]
fn baresip_pcma_recording_matches_source() {
    baresip_round_trip(CodecCase {
        module: "g711.so",
        name: "PCMA",
        rate: 8000,
        min_corr: MIN_CORR_G711,
        listed: "PCMA",
    });
}

#[test]
fn baresip_g722_recording_matches_source() {
    baresip_round_trip(CodecCase {
        module: "g722.so",
        name: "G722",
        rate: 16000,
        min_corr: MIN_CORR_G722,
        listed: "G722",
    });
}

#[test]
fn baresip_opus_recording_matches_source() {
    baresip_round_trip(CodecCase {
        module: "opus.so",
        name: "opus",
        rate: 48000,
        min_corr: MIN_CORR_OPUS,
        listed: "opus",
    });
}

// ------------------------------------------------------------------------------------------
// 2. SIPp SIPREC with RTP from pcap
// ------------------------------------------------------------------------------------------

/// `target/<profile>/examples/rtp_load`, built on demand (cargo does not build examples for
/// an integration test).
fn rtp_load_bin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_gridedge"));
    let profile_dir = exe.parent().expect("target/<profile>");
    let bin = profile_dir.join("examples").join("rtp_load");
    let target_dir = profile_dir.parent().expect("target dir");
    let release = !cfg!(debug_assertions);
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", "rtp_load", "--target-dir"])
        .arg(target_dir);
    if release {
        cmd.arg("--release");
    }
    let (status, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(600));
    assert!(
        status.success(),
        "cargo build --example rtp_load failed:\n{err}"
    );
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

#[test]
fn sipp_siprec_two_participants_on_their_channels() {
    require_tool("sipp");
    let player = rtp_load_bin();
    let d = start("");
    let dir = tempfile::tempdir().unwrap();
    const SECS: f64 = 3.0;
    let lo = Ipv4Addr::LOCALHOST;
    // participant 1 (the customer, label 1): 440 Hz; participant 2 (agent 1002, label 2): 1 kHz
    let left = pcap::g711_packets(
        &tone(8000, SECS, 440.0, AMPLITUDE),
        false,
        0x1111_1111,
        100,
        0,
    );
    let right = pcap::g711_packets(
        &tone(8000, SECS, 1000.0, AMPLITUDE),
        false,
        0x2222_2222,
        900,
        0,
    );
    fs::write(
        dir.path().join("siprec_left.pcap"),
        pcap::rtp_pcap(&left, (lo, 40000), (lo, 50000)),
    )
    .unwrap();
    fs::write(
        dir.path().join("siprec_right.pcap"),
        pcap::rtp_pcap(&right, (lo, 40002), (lo, 50002)),
    )
    .unwrap();
    // field0: the player for the second stream, field1: its pcap
    let csv = format!("SEQUENTIAL\n{};siprec_right.pcap;\n", player.display());
    fs::write(dir.path().join("inf.csv"), csv).unwrap();
    let scenario = sipp_scenario("siprec_uac.xml");

    let call_id = format!("siprec-{:016x}@gridedge-e2e", rand::random::<u64>());
    let sipp = require_tool("sipp");
    let mut cmd = Command::new(sipp);
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(&scenario)
        .arg("-inf")
        .arg(dir.path().join("inf.csv"))
        .args(["-i", "127.0.0.1", "-nostdin", "-nd", "-m", "1", "-r", "1"])
        .args(["-cid_str", &call_id])
        .args(["-trace_err", "-trace_msg", "-trace_logs"])
        .args(["-timeout", "30s", "-timeout_error"])
        .arg(d.listeners.udp().to_string());
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(45));
    let traces = || {
        let mut s = String::new();
        for e in fs::read_dir(dir.path()).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                s.push_str(&format!("=== {}\n{}\n", p.display(), read_lossy(&p)));
            }
        }
        s
    };
    if !status.success() {
        d.fail(&format!(
            "SIPp SIPREC call failed: {status}\n--- stdout:\n{}\n--- stderr:\n{err}\n{}",
            tail(&out, 4000),
            tail(&traces(), 12000)
        ));
    }
    await_idle(&d);
    let entry = await_recording(&d, &call_id, "complete");
    check_listing_entry(&d, &entry, &call_id, None);
    let participants = entry["participants"].to_string();
    for p in ["alice", "1002"] {
        assert!(
            participants.contains(p),
            "metadata participant {p} not listed: {entry}"
        );
    }
    let (_, wav) = download_wav(&d, &entry);
    let (l, r) = (&wav.channels[0], &wav.channels[1]);
    let (l440, l1k) = (goertzel(l, 8000, 440.0), goertzel(l, 8000, 1000.0));
    let (r440, r1k) = (goertzel(r, 8000, 440.0), goertzel(r, 8000, 1000.0));
    eprintln!("left 440={l440:.1} 1k={l1k:.1}; right 440={r440:.1} 1k={r1k:.1}");
    assert!(
        l440 > 100.0 * l1k && l440 > 1000.0,
        "customer (left) channel must carry participant 1's 440 Hz: 440={l440} 1k={l1k}"
    );
    assert!(
        r1k > 100.0 * r440 && r1k > 1000.0,
        "agent (right) channel must carry participant 2's 1 kHz: 440={r440} 1k={r1k}"
    );
    // each channel holds about the 3 s played
    for (name, ch) in [("left", l), ("right", r)] {
        let loud = ch.chunks(80).filter(|c| rms(c) > 1000.0).count() as f64 * 0.01;
        assert!(
            (loud - SECS).abs() <= 0.5,
            "{name}: {loud:.2} s of tone, {SECS} s played"
        );
    }
}

// ------------------------------------------------------------------------------------------
// 3. loss, reordering, duplication, SSRC change
// ------------------------------------------------------------------------------------------

#[test]
fn impaired_rtp_gives_right_length_with_gaps_filled_and_counted() {
    let d = start("");
    let sock = rtp_socket();
    let (mut call, _id, dst) = plain_call(&d, "5550100", sock.local_addr().unwrap().port());
    let call_id = call.call_id.clone();

    const N: usize = 250; // 5 s
    const SWITCH: usize = 125; // SSRC change here (a transfer, re-anchored timeline)
    let src = test_signal(8000, N as f64 * 0.02);
    let first = pcap::g711_packets(&src[..SWITCH * 160], false, 0xaaaa_0001, 1000, 5000);
    let second = pcap::g711_packets(&src[SWITCH * 160..], false, 0xbbbb_0002, 40000, 777_000);
    let packets: Vec<Vec<u8>> = first.into_iter().chain(second).collect();
    assert_eq!(packets.len(), N);
    let imp = Impairments {
        drop: (10..N).step_by(20).collect(), // 12 packets, 4.8 %
        swap_with_next: (17..N - 1).step_by(25).collect(),
        duplicate: (5..N).step_by(30).collect(),
    };
    for i in &imp.drop {
        assert!(*i != SWITCH && *i + 1 != SWITCH && *i != N - 1);
        assert!(!imp.swap_with_next.contains(i) && !imp.swap_with_next.contains(&(i - 1)));
    }
    let sched = schedule(&packets, &imp);
    let before: Vec<f64> = ["lost", "reordered", "duplicate"]
        .iter()
        .map(|r| packets_metric(&d, r))
        .collect();
    let lag = play(&sock, dst, &sched);
    assert!(
        lag < Duration::from_millis(100),
        "sender fell behind by {lag:?}"
    );
    bye_ok(&d, &mut call);
    await_idle(&d);

    let deltas: Vec<f64> = ["lost", "reordered", "duplicate"]
        .iter()
        .zip(&before)
        .map(|(r, b)| packets_metric(&d, r) - b)
        .collect();
    let (lost, reordered, dup) = (deltas[0], deltas[1], deltas[2]);
    let (n_drop, n_swap, n_dup) = (
        imp.drop.len() as f64,
        imp.swap_with_next.len() as f64,
        imp.duplicate.len() as f64,
    );
    let m = recording_metrics(&d);
    assert!(
        (n_drop..=n_drop + 2.0).contains(&lost),
        "lost {lost}, dropped {n_drop}\n{m}"
    );
    assert!(
        (n_swap..=2.0 * n_swap).contains(&reordered),
        "reordered {reordered}, swapped pairs {n_swap}\n{m}"
    );
    assert!(
        (n_dup..=n_dup + 1.0).contains(&dup),
        "duplicate {dup}, duplicated {n_dup}\n{m}"
    );

    let entry = await_recording(&d, &call_id, "complete");
    let (_, wav) = download_wav(&d, &entry);
    let ch = &wav.channels[0];
    assert!(
        peak(&wav.channels[1]) <= SILENT_PEAK,
        "agent channel not silent"
    );

    // What the recorder should hold: the source with silence where packets were dropped.
    let mut expected = src.clone();
    for &i in &imp.drop {
        expected[i * 160..(i + 1) * 160].fill(0);
    }
    let (e1, e2) = expected.split_at(SWITCH * 160);
    let a1 = align(e1, ch);
    let a2 = align(e2, ch);
    eprintln!("segment 1 {a1:?}\nsegment 2 {a2:?}");
    assert!(
        a1.correlation >= MIN_CORR_EXACT && a2.correlation >= MIN_CORR_EXACT,
        "segments placed wrong (reordering/duplicates/SSRC change): {a1:?} {a2:?}"
    );
    // Length: from the first sample of segment 1 to the last of segment 2 is the media sent.
    let span = (a2.lag + e2.len()) as i64 - a1.lag as i64;
    assert!(
        (span - (N * 160) as i64).abs() <= 2 * 160,
        "recorded media spans {span} samples, sent {} (± 2 packets)",
        N * 160
    );
    // The file itself adds at most the answer -> first packet and last packet -> BYE time.
    assert!(
        wav.frames() as i64 >= span && wav.frames() as i64 <= span + 8000,
        "file {} frames for {span} samples of media",
        wav.frames()
    );
    // Gaps are filled with silence at the dropped packets' places (segment 1: exact timing).
    for &i in imp.drop.iter().filter(|&&i| i < SWITCH) {
        let at = a1.lag + i * 160;
        let gap = &ch[at + 20..at + 140];
        assert!(
            rms(gap) < 100.0,
            "dropped packet {i} not filled with silence (rms {:.0})",
            rms(gap)
        );
    }
}

// ------------------------------------------------------------------------------------------
// 4. hostile input during a good call
// ------------------------------------------------------------------------------------------

const METADATA_OK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ=="/>
  <participant participant_id="p1"><nameID aor="sip:alice@customer.example"/></participant>
  <participant participant_id="p2"><nameID aor="sip:1002@127.0.0.1"/></participant>
  <stream stream_id="s1" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>1</label></stream>
  <stream stream_id="s2" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>2</label></stream>
  <participantstreamassoc participant_id="p1"><send>s1</send><recv>s2</recv></participantstreamassoc>
  <participantstreamassoc participant_id="p2"><send>s2</send><recv>s1</recv></participantstreamassoc>
</recording>
"#;

fn siprec_body(boundary: &str, sdp: &str, metadata: &str) -> String {
    format!(
        "--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
         --{boundary}\r\nContent-Type: application/rs-metadata+xml\r\n\
         Content-Disposition: recording-session\r\n\r\n{metadata}\r\n--{boundary}--\r\n"
    )
}

fn siprec_headers() -> Vec<(&'static str, String)> {
    vec![("Require", "siprec".to_string())]
}

/// Sends one INVITE that must be refused with `code`.
fn expect_refused(d: &Daemon, what: &str, ctype: &str, body: &[u8], siprec: bool, code: u16) {
    let mut c = RecCall::new(d.listeners.udp(), "record", "5550199");
    let extra = if siprec { siprec_headers() } else { Vec::new() };
    match c.invite(&extra, ctype, body) {
        Some(r) if r.code == code => {}
        Some(r) => d.fail(&format!("{what}: want {code}, got:\n{}", r.raw)),
        None => d.fail(&format!("{what}: no final response (want {code})")),
    }
}

#[test]
fn hostile_input_is_refused_without_harm_to_a_concurrent_call() {
    let mut d = start("");
    let sock = rtp_socket();
    let (mut call, record_id, dst) = plain_call(&d, "5550100", sock.local_addr().unwrap().port());
    let call_id = call.call_id.clone();
    const SECS: f64 = 4.0;
    let src = test_signal(8000, SECS);
    let packets = pcap::g711_packets(&src, false, 0x600d_0001, 1, 0);
    let sched = schedule(&packets, &Impairments::default());
    // malformed RTP inside the good stream: same source address and port, same SSRC
    let bad = sock.try_clone().expect("clone RTP socket");
    let player = std::thread::spawn(move || play(&sock, dst, &sched));

    let malformed = malformed_rtp(0x600d_0001);
    let refused_before = packets_metric(&d, "refused");
    for (_, p) in &malformed {
        bad.send_to(p, dst).unwrap();
    }

    let ip = "127.0.0.1".parse().unwrap();
    let good_offer = sdp_offer(ip, &[MediaLine::new(41000, &[PCMU])]);
    // malformed SDP -> 400
    for (what, body) in [
        ("garbage SDP", b"this is not SDP\r\n".to_vec()),
        (
            "SDP with port 99999",
            good_offer
                .replace("m=audio 41000", "m=audio 99999")
                .into_bytes(),
        ),
        (
            "SDP without v=",
            good_offer.replacen("v=0\r\n", "", 1).into_bytes(),
        ),
        (
            "SDP without any c=",
            good_offer
                .replace("c=IN IP4 127.0.0.1\r\n", "")
                .into_bytes(),
        ),
        ("non-UTF-8 SDP", {
            let mut b = good_offer.clone().into_bytes();
            b.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28, b'\r', b'\n']);
            b
        }),
    ] {
        expect_refused(&d, what, "application/sdp", &body, false, 400);
    }
    // malformed SIPREC multipart / metadata -> 400
    let sdp2 = sdp_offer(
        ip,
        &[
            MediaLine::new(41002, &[PCMU]).label("1"),
            MediaLine::new(41004, &[PCMU]).label("2"),
        ],
    );
    let ok_body = siprec_body("XyZb0undary", &sdp2, METADATA_OK);
    expect_refused(
        &d,
        "multipart with a boundary not in the body",
        "multipart/mixed;boundary=NotThere",
        ok_body.as_bytes(),
        true,
        400,
    );
    expect_refused(
        &d,
        "multipart without boundary parameter",
        "multipart/mixed",
        ok_body.as_bytes(),
        true,
        400,
    );
    let truncated = &METADATA_OK[..METADATA_OK.len() / 2];
    expect_refused(
        &d,
        "truncated metadata XML",
        "multipart/mixed;boundary=XyZb0undary",
        siprec_body("XyZb0undary", &sdp2, truncated).as_bytes(),
        true,
        400,
    );
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><participant participant_id="&lol3;"/></recording>"#;
    expect_refused(
        &d,
        "metadata with a DTD (billion laughs)",
        "multipart/mixed;boundary=XyZb0undary",
        siprec_body("XyZb0undary", &sdp2, laughs).as_bytes(),
        true,
        400,
    );
    let deep = format!(
        "<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">{}{}</recording>",
        "<a>".repeat(1000),
        "</a>".repeat(1000)
    );
    expect_refused(
        &d,
        "metadata nested 1000 deep",
        "multipart/mixed;boundary=XyZb0undary",
        siprec_body("XyZb0undary", &sdp2, &deep).as_bytes(),
        true,
        400,
    );
    // no supported codec -> 488
    let g729 = sdp_offer(ip, &[MediaLine::new(41006, &[(18, "G729", 8000, 1)])]);
    expect_refused(
        &d,
        "G.729-only offer",
        "application/sdp",
        g729.as_bytes(),
        false,
        488,
    );

    // BYE for a dialog that does not exist -> 481
    let mut ghost = RecCall::new(d.listeners.udp(), "record", "5550198");
    ghost.to_tag = Some("nosuchtag".into());
    match ghost.bye() {
        Some(r) if r.code == 481 => {}
        other => d.fail(&format!(
            "BYE for an unknown dialog: want 481, got {other:?}"
        )),
    }

    // CANCEL: sent right behind the INVITE. A recording server answers at once, so the 200
    // may win the race; then the CANCEL has nothing to cancel (RFC 3261 §9.2: 200 to the
    // CANCEL or 481) and the call is ended with a BYE. When the CANCEL wins: 487 + 200.
    let mut c = RecCall::new(d.listeners.udp(), "record", "5550197");
    let offer = sdp_offer(ip, &[MediaLine::new(41008, &[PCMU])]);
    let first = c.send_invite(&[], "application/sdp", offer.as_bytes());
    let (cancel, seen) = c.cancel();
    let fin = match first {
        Some(r) if r.code >= 200 => Some(r),
        _ => seen.or_else(|| c.await_invite_final(SIP_TIMEOUT)),
    }
    .unwrap_or_else(|| d.fail("CANCELled INVITE: no final response"));
    c.after_final(&fin);
    match fin.code {
        487 => {
            let cr = cancel.unwrap_or_else(|| d.fail("no response to CANCEL"));
            assert_eq!(
                cr.code, 200,
                "CANCEL before the 200: CANCEL gets 200\n{}",
                cr.raw
            );
        }
        200 => {
            eprintln!("CANCEL lost the race against the 200: checking the BYE path instead");
            if let Some(cr) = cancel {
                assert!(
                    matches!(cr.code, 200 | 481),
                    "CANCEL after 200:\n{}",
                    cr.raw
                );
            }
            bye_ok(&d, &mut c);
        }
        other => d.fail(&format!("CANCELled INVITE answered {other}:\n{}", fin.raw)),
    }

    let lag = player.join().expect("RTP player");
    assert!(
        lag < Duration::from_millis(200),
        "sender fell behind by {lag:?}"
    );
    bye_ok(&d, &mut call);
    await_idle(&d);
    let refused = packets_metric(&d, "refused") - refused_before;
    assert!(
        refused >= (malformed.len() - 1) as f64, // an empty datagram may not even be read
        "refused {refused} of {} malformed datagrams\n{}",
        malformed.len(),
        recording_metrics(&d)
    );

    // the good call's recording is complete and correct
    let entry = await_recording(&d, &call_id, "complete");
    check_listing_entry(&d, &entry, &call_id, Some(&record_id));
    let (_, wav) = download_wav(&d, &entry);
    let a = align(&src, &wav.channels[0]);
    assert!(
        a.correlation >= MIN_CORR_EXACT,
        "good call damaged by hostile input: {a:?}"
    );
    assert!(
        (wav.duration_secs() - SECS).abs() <= 1.0,
        "good call lasts {:.2} s, sent {SECS} s",
        wav.duration_secs()
    );
    assert_daemon_healthy(&mut d, "after hostile recording input");
}

// ------------------------------------------------------------------------------------------
// 5. RTP timeout
// ------------------------------------------------------------------------------------------

#[test]
fn rtp_timeout_ends_a_recording_like_a_bye() {
    let d = start("rtp_timeout_secs = 1");
    let sock = rtp_socket();
    let (call, record_id, dst) = plain_call(&d, "5550100", sock.local_addr().unwrap().port());
    const SECS: f64 = 1.5;
    let src = test_signal(8000, SECS);
    let sched = schedule(
        &pcap::g711_packets(&src, false, 0x7100_0001, 1, 0),
        &Impairments::default(),
    );
    play(&sock, dst, &sched);
    let stopped = Instant::now();
    // no BYE: the recording must end by itself
    await_idle(&d);
    let ended_after = stopped.elapsed();
    assert!(
        ended_after <= Duration::from_secs(6),
        "recording ended {ended_after:?} after the RTP stopped (timeout 1 s)"
    );
    let entry = await_recording(&d, &call.call_id, "complete");
    check_listing_entry(&d, &entry, &call.call_id, Some(&record_id));
    let (_, wav) = download_wav(&d, &entry);
    let a = align(&src, &wav.channels[0]);
    assert!(a.correlation >= MIN_CORR_EXACT, "{a:?}");
    assert!(
        wav.duration_secs() >= SECS - 0.1 && wav.duration_secs() <= SECS + 3.5,
        "timed-out recording lasts {:.2} s for {SECS} s of media",
        wav.duration_secs()
    );
    drop(call);
}

// ------------------------------------------------------------------------------------------
// 6. crash repair
// ------------------------------------------------------------------------------------------

#[test]
fn recording_interrupted_by_kill9_is_repaired_as_partial() {
    let mut d = start("");
    let sock = rtp_socket();
    let (call, record_id, dst) = plain_call(&d, "5550100", sock.local_addr().unwrap().port());
    const SECS: f64 = 10.0;
    let src = test_signal(8000, SECS);
    let sched = schedule(
        &pcap::g711_packets(&src, false, 0xc4a5_0001, 1, 0),
        &Impairments::default(),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let player = std::thread::spawn(move || {
        let start = Instant::now();
        for t in &sched {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let due = start + Duration::from_millis(t.at_ms);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let _ = sock.send_to(&t.data, dst);
        }
    });
    // Kill after 5 s of media received: more than the recorder's checkpoint interval
    // (the integrator's default checkpoint_ms is 2 s), so something must survive.
    let received = poll_until(Duration::from_secs(10), || {
        let n = packets_metric(&d, "received");
        (n >= 250.0).then_some(n)
    })
    .unwrap_or_else(|| d.fail(&format!("RTP not received\n{}", recording_metrics(&d))));
    d.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    player.join().unwrap();
    let received_secs = received * 0.02;

    d.restart();
    let entry = await_recording(&d, &call.call_id, "partial");
    check_listing_entry(&d, &entry, &call.call_id, Some(&record_id));
    let (_, wav) = download_wav(&d, &entry);
    let secs = wav.duration_secs();
    eprintln!("received {received_secs:.2} s before the kill; repaired {secs:.2} s");
    // A crash may lose the last checkpoint interval (2 s by default) and the reorder window
    // (0.2 s); it cannot add media that was never received (+0.5 s for packets in flight
    // around the metric read and the answer -> first packet delay).
    assert!(
        secs >= received_secs - 2.5 && secs <= received_secs + 0.5,
        "repaired recording lasts {secs:.2} s, {received_secs:.2} s were received"
    );
    let a = align(&src, &wav.channels[0]);
    assert!(a.correlation >= 0.9, "repaired audio does not match: {a:?}");
    drop(call);
}

// ------------------------------------------------------------------------------------------
// 7. Range requests on the download
// ------------------------------------------------------------------------------------------

#[test]
fn download_supports_range_requests() {
    let d = start("");
    let sock = rtp_socket();
    let (mut call, record_id, dst) = plain_call(&d, "5550100", sock.local_addr().unwrap().port());
    // 2.5 s of stereo 8 kHz = 80 kB: more than one 64 KiB encryption chunk
    let src = test_signal(8000, 2.5);
    play(
        &sock,
        dst,
        &schedule(
            &pcap::g711_packets(&src, false, 0x2a2a_0001, 1, 0),
            &Impairments::default(),
        ),
    );
    bye_ok(&d, &mut call);
    let entry = await_recording(&d, &call.call_id, "complete");
    check_listing_entry(&d, &entry, &call.call_id, Some(&record_id));

    let full = download_raw(&d, &record_id, &[]);
    assert_eq!(full.status, 200, "{:?}", full.headers);
    assert_eq!(
        full.header("accept-ranges"),
        Some("bytes"),
        "a 200 advertises Accept-Ranges: bytes: {:?}",
        full.headers
    );
    let n = full.body.len();
    assert!(
        n > 44 + 8000,
        "a 1 s stereo recording is more than {n} bytes"
    );
    // (the listed size may be the encrypted file's; the listed sha256 is the plaintext's)
    let (_, _) = download_wav(&d, &entry);

    let head = download_raw(&d, &record_id, &[("Range", "bytes=0-43")]);
    assert_eq!(head.status, 206, "{:?}", head.headers);
    assert_eq!(head.body, full.body[..44], "bytes 0-43 are the WAV header");
    assert!(head.body.starts_with(b"RIFF") && &head.body[8..12] == b"WAVE");
    assert_eq!(
        head.header("content-range"),
        Some(format!("bytes 0-43/{n}").as_str())
    );

    let suffix = download_raw(&d, &record_id, &[("Range", "bytes=-100")]);
    assert_eq!(suffix.status, 206, "{:?}", suffix.headers);
    assert_eq!(suffix.body, full.body[n - 100..]);
    assert_eq!(
        suffix.header("content-range"),
        Some(format!("bytes {}-{}/{n}", n - 100, n - 1).as_str())
    );

    let open = download_raw(&d, &record_id, &[("Range", "bytes=1000-")]);
    assert_eq!(open.status, 206);
    assert_eq!(open.body, full.body[1000..]);

    // a range across a 64 KiB encryption chunk boundary decrypts only what is asked
    if n > 65_536 + 100 {
        let r = download_raw(&d, &record_id, &[("Range", "bytes=65500-65599")]);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, full.body[65_500..65_600]);
    }

    let past = download_raw(&d, &record_id, &[("Range", &format!("bytes={n}-"))]);
    assert_eq!(past.status, 416, "{:?}", past.headers);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{n}").as_str())
    );
}

// ------------------------------------------------------------------------------------------
// The recording id reaches the call's CDR (SRFMSGID)
// ------------------------------------------------------------------------------------------

/// FreeSWITCH forks a call to the recording URI with `{sip_h_X-Call-UUID=${uuid}}`; when the
/// call's CDR is built (here from the real mod_json_cdr fixture of that call, posted to the
/// CDR receiver), its records carry the recording id. Checked in the built records of the
/// CDR store, i.e. what the grid push (话单, SRFMSGID) is made from.
#[test]
fn the_calls_cdr_carries_the_recording_id() {
    const UUID: &str = "e3133bf7-dcde-4daf-9663-9a79ffcef5ad";
    const CORE: &str = "651a8db2-4f67-4cf8-b622-169e8a482e50";
    let d = start("[cdr]\nsettle_secs = 1\n");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut call = RecCall::new(d.listeners.udp(), "record", "5550123");
    let offer = sdp_offer(
        "127.0.0.1".parse().unwrap(),
        &[MediaLine::new(
            rtp.local_addr().unwrap().port(),
            &[PCMU, TEL_EVENT],
        )],
    );
    let r = call
        .invite(
            &[("X-Call-UUID", UUID.to_string())],
            "application/sdp",
            offer.as_bytes(),
        )
        .unwrap_or_else(|| d.fail("no final answer to the recording INVITE"));
    assert_eq!(r.code, 200, "{}", r.raw);
    let id = recording_id(&r);

    let doc = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/freeswitch/cdr-inbound-answered-prepaid-2015.json"),
    )
    .unwrap();
    let posted = mgmt::http_request(
        d.listeners.http,
        "POST",
        &format!("/freeswitch/cdr?uuid={UUID}"),
        &[("Content-Type".to_string(), "application/json".to_string())],
        &doc,
    )
    .unwrap_or_else(|e| d.fail(&format!("POST CDR: {e}")));
    assert_eq!(posted.status, 200, "CDR refused: {}", posted.body);

    let db = d.state_dir.join("gridedge.db");
    let call_key = format!("{CORE}/{UUID}");
    let recordings = poll_until(Duration::from_secs(15), || {
        let conn = rusqlite::Connection::open(&db).ok()?;
        let mut stmt = conn
            .prepare("SELECT record FROM call_records WHERE call_key = ?1")
            .ok()?;
        let rows: Vec<String> = stmt
            .query_map([&call_key], |r| r.get(0))
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .unwrap_or_else(|| d.fail("the call's CDR was not built"));
    for rec in &recordings {
        let v: Value = serde_json::from_str(rec).unwrap();
        assert_eq!(v["recording"].as_str(), Some(id.as_str()), "{v}");
    }
    let _ = call.bye();
}

// ------------------------------------------------------------------------------------------
// DTMF is metadata, not audio
// ------------------------------------------------------------------------------------------

/// An RFC 4733 key press in the middle of a call (its packets sharing one timestamp, the end
/// packet sent three times, as senders do): the audio around it is recorded, the key press
/// is listed once as metadata (side, offset, duration) with its key masked by default, and
/// none of its packets is decoded as audio.
#[test]
fn dtmf_is_kept_as_masked_metadata() {
    let d = start("");
    let sock = rtp_socket();
    let (mut call, _id, dst) = plain_call(&d, "5550100", sock.local_addr().unwrap().port());
    let ssrc = 0x0d7f_0001;
    let src = test_signal(8000, 2.0);
    let mut audio = pcap::g711_packets(&src, false, ssrc, 100, 8000);
    // After one second: digit 5 for 160 ms (8 updates of 20 ms, the last with E set, x3).
    let at = 50;
    let ts = 8000 + 160 * at as u32;
    let mut dtmf = Vec::new();
    for i in 1..=8u16 {
        let end = i == 8;
        let dur = (160 * i).to_be_bytes();
        let payload = [5u8, if end { 0x80 | 10 } else { 10 }, dur[0], dur[1]];
        for _ in 0..if end { 3 } else { 1 } {
            dtmf.push(payload);
        }
    }
    // Renumber: the audio after the key press follows the DTMF packets' sequence numbers.
    let mut packets: Vec<Vec<u8>> = audio.drain(..at).collect();
    let mut seq = 100 + at as u16;
    for (i, p) in dtmf.iter().enumerate() {
        // Every packet, repeats included, has its own sequence number; the repeats share
        // the event's timestamp, which is how the receiver tells them apart from new events.
        packets.push(pcap::rtp_packet(101, i == 0, seq, ts, ssrc, p));
        seq = seq.wrapping_add(1);
    }
    for (k, p) in audio.into_iter().enumerate() {
        let mut p = p;
        let s = seq.wrapping_add(k as u16).to_be_bytes();
        p[2] = s[0];
        p[3] = s[1];
        packets.push(p);
    }
    let sched: Vec<Timed> = packets
        .into_iter()
        .enumerate()
        .map(|(i, data)| Timed {
            at_ms: 20 * i as u64,
            data,
        })
        .collect();
    play(&sock, dst, &sched);
    bye_ok(&d, &mut call);
    let entry = await_recording(&d, &call.call_id, "complete");
    let marks = entry["dtmf"].as_array().cloned().unwrap_or_default();
    assert_eq!(marks.len(), 1, "one key press: {entry}");
    let m = &marks[0];
    assert_eq!(m["side"], "customer", "{m}");
    assert_eq!(m["key"], "x", "keys are masked by default: {m}");
    let offset = m["offsetMs"].as_u64().unwrap_or(0);
    assert!(
        (900..=1300).contains(&offset),
        "key press at {offset} ms: {m}"
    );
    let dur = m["durationMs"].as_u64().unwrap_or(0);
    assert!(
        (140..=180).contains(&dur),
        "160 ms key press lasted {dur} ms: {m}"
    );
    assert!(
        packets_metric(&d, "refused") == 0.0,
        "{}",
        recording_metrics(&d)
    );
}
