//! Load generator for the call recorder (`scripts/bench-recording.sh`) and a pcap player for
//! the SIPREC end-to-end test.
//!
//! ```text
//! rtp_load calls --target HOST:PORT [--uri record] --calls N --secs S
//!                [--setup-rate 500] [--sockets 64]
//! rtp_load play-pcap FILE HOST:PORT
//! rtp_load tone-pcap FREQ_HZ SECS FILE      # a PCMU tone as a pcap, for SIPp by hand
//! ```
//!
//! `calls` opens N concurrent plain SIP INVITE sessions over UDP to the recording URI (two
//! sendonly m= lines, PCMU: first = customer, second = agent), then streams both legs of every
//! call from this process at 20 ms pacing for S seconds, then BYEs every call. Packets go out
//! with `sendmmsg(2)` from a small pool of sockets (each leg's SDP port is the port of the
//! socket that sends it, so source-address checks on the recorder side hold), in four 5 ms
//! sub-slots per 20 ms frame (a quarter of the calls each) so the load is not one burst.
//! Pacing is by absolute deadlines (t0 + k * 5 ms): lateness never accumulates, and the worst
//! lateness at the *end* of a sub-slot's sends is reported as `send_lag_max_ms` — if it
//! approaches 20 ms the generator, not the recorder, is the bottleneck.
//! Result: one JSON line on stdout:
//! `{"calls":..,"calls_failed":..,"packets_sent":..,"send_errors":..,"send_lag_max_ms":..,
//!   "send_lag_p99_ms":..,"media_secs":..,"bye_ok":..}`; progress on stderr.
//!
//! `play-pcap` replays the UDP payloads of a classic pcap to HOST:PORT at their original
//! relative timing (the destination in the capture is ignored).

#[path = "../tests/support/pcap.rs"]
mod pcap;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const FRAME_MS: u64 = 20;
const SLOTS: u64 = 4;
const PAYLOAD: usize = 160;
const PKT: usize = 12 + PAYLOAD;

fn usage() -> ! {
    eprintln!(
        "usage:\n  rtp_load calls --target HOST:PORT [--uri record] --calls N --secs S \
         [--setup-rate 500] [--sockets 64]\n  rtp_load play-pcap FILE HOST:PORT\n  \
         rtp_load tone-pcap FREQ_HZ SECS FILE"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("calls") => calls(&args[1..]),
        Some("play-pcap") if args.len() == 3 => {
            if let Err(e) = play_pcap(&args[1], &args[2]) {
                eprintln!("rtp_load play-pcap: {e}");
                std::process::exit(1);
            }
        }
        Some("tone-pcap") if args.len() == 4 => {
            let freq: f64 = args[1].parse().unwrap_or_else(|_| usage());
            let secs: f64 = args[2].parse().unwrap_or_else(|_| usage());
            let n = (8000.0 * secs) as usize;
            let samples: Vec<i16> = (0..n)
                .map(|i| {
                    let t = i as f64 / 8000.0;
                    (9830.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
                })
                .collect();
            let pkts = pcap::g711_packets(&samples, false, rand::random(), 1, 0);
            let lo = std::net::Ipv4Addr::LOCALHOST;
            let bytes = pcap::rtp_pcap(&pkts, (lo, 40000), (lo, 50000));
            if let Err(e) = std::fs::write(&args[3], bytes) {
                eprintln!("rtp_load tone-pcap: {}: {e}", args[3]);
                std::process::exit(1);
            }
        }
        _ => usage(),
    }
}

// ---- play-pcap ---------------------------------------------------------------------------

fn play_pcap(file: &str, dst: &str) -> Result<(), String> {
    let dst: SocketAddr = dst.parse().map_err(|e| format!("bad address {dst}: {e}"))?;
    let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let recs = pcap::read_pcap(&data)?;
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let Some(first) = recs.first() else {
        return Ok(());
    };
    let t0 = first.ts_us;
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    for r in &recs {
        let due = start + Duration::from_micros(r.ts_us.saturating_sub(t0));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            worst = worst.max(now - due);
        }
        sock.send_to(&r.payload, dst)
            .map_err(|e| format!("send to {dst}: {e}"))?;
    }
    eprintln!(
        "rtp_load play-pcap: {} datagrams to {dst}, worst lateness {:.1} ms",
        recs.len(),
        worst.as_secs_f64() * 1000.0
    );
    Ok(())
}

// ---- calls -------------------------------------------------------------------------------

struct Opts {
    target: SocketAddr,
    uri: String,
    calls: usize,
    secs: u64,
    setup_rate: usize,
    sockets: usize,
}

fn parse_opts(args: &[String]) -> Opts {
    let mut o = Opts {
        target: "127.0.0.1:5060".parse().unwrap(),
        uri: "record".into(),
        calls: 0,
        secs: 10,
        setup_rate: 500,
        sockets: 64,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        let bad = |e: String| -> ! {
            eprintln!("rtp_load: bad value {v:?} for {a}: {e}");
            std::process::exit(2)
        };
        match a.as_str() {
            "--target" => o.target = v.parse().unwrap_or_else(|e| bad(format!("{e}"))),
            "--uri" => o.uri = v.clone(),
            "--calls" => o.calls = v.parse().unwrap_or_else(|e| bad(format!("{e}"))),
            "--secs" => o.secs = v.parse().unwrap_or_else(|e| bad(format!("{e}"))),
            "--setup-rate" => o.setup_rate = v.parse().unwrap_or_else(|e| bad(format!("{e}"))),
            "--sockets" => o.sockets = v.parse().unwrap_or_else(|e| bad(format!("{e}"))),
            _ => usage(),
        }
    }
    if o.calls == 0 || o.setup_rate == 0 || o.sockets == 0 {
        usage();
    }
    o
}

/// One leg (one m= line) of one call, with its RTP header state.
struct Leg {
    dst: SocketAddrV4,
    sock: usize,
    seq: u16,
    ts: u32,
    ssrc: u32,
    /// Which tone table row to use (customer 440 Hz, agent 1 kHz).
    agent: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Inviting,
    Up,
    Failed,
    ByeSent,
    Done,
}

struct Call {
    call_id: String,
    from_tag: String,
    to_tag: String,
    state: State,
    sent_at: Instant,
    tries: u32,
    invite: Vec<u8>,
    legs: [Option<usize>; 2],
    rtp_ports: [u16; 2],
    bye: Vec<u8>,
}

fn sip_request(
    method: &str,
    o: &Opts,
    local: SocketAddr,
    c: &Call,
    i: usize,
    cseq: u32,
    body: &str,
) -> Vec<u8> {
    let to_tag = if c.to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={}", c.to_tag)
    };
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:{uri}@{t} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{i}-{cseq}-{m};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:load{i}@{ip}>;tag={ft}\r\n\
         To: <sip:{uri}@{t}>{to_tag}\r\n\
         Call-ID: {cid}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:load{i}@{local}>\r\n\
         {ctype}Content-Length: {len}\r\n\r\n{body}",
        uri = o.uri,
        t = o.target,
        ip = local.ip(),
        ft = c.from_tag,
        cid = c.call_id,
        m = method.len(),
        len = body.len(),
    )
    .into_bytes()
}

fn offer(ip: std::net::IpAddr, ports: [u16; 2], id: usize) -> String {
    format!(
        "v=0\r\no=- {id} 1 IN IP4 {ip}\r\ns=rtp_load\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:2\r\na=sendonly\r\n",
        ports[0], ports[1]
    )
}

/// (code, Call-ID, CSeq method, To tag, body) of a SIP response.
fn parse_response(b: &[u8]) -> Option<(u16, String, String, String, String)> {
    let text = std::str::from_utf8(b).ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    let code: u16 = status.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()?;
    let (mut cid, mut method, mut tag) = (String::new(), String::new(), String::new());
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match n.trim().to_ascii_lowercase().as_str() {
            "call-id" | "i" => cid = v.to_string(),
            "cseq" => method = v.split_whitespace().nth(1).unwrap_or("").to_string(),
            "to" | "t" => {
                if let Some(t) = v.split(";tag=").nth(1) {
                    tag = t.split(';').next().unwrap_or("").trim().to_string();
                }
            }
            _ => {}
        }
    }
    Some((code, cid, method, tag, body.to_string()))
}

/// Destinations of the answered m= lines (port 0 = refused).
fn answer_targets(body: &str, fallback: std::net::Ipv4Addr) -> Vec<Option<SocketAddrV4>> {
    let mut ip = fallback;
    let mut out = Vec::new();
    for l in body.lines() {
        if let Some(c) = l.trim().strip_prefix("c=IN IP4 ") {
            if let Ok(a) = c.trim().parse() {
                ip = a;
            }
        } else if let Some(m) = l.trim().strip_prefix("m=audio ") {
            let port: u16 = m
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            out.push(port);
        }
    }
    out.into_iter()
        .map(|p| (p != 0).then(|| SocketAddrV4::new(ip, p)))
        .collect()
}

/// 50 frames (1 s) of µ-law tone per row: row 0 = 440 Hz (customer), row 1 = 1 kHz (agent).
fn tone_table() -> [Vec<[u8; PAYLOAD]>; 2] {
    let row = |f: f64| {
        (0..50)
            .map(|k| {
                let mut p = [0u8; PAYLOAD];
                for (j, b) in p.iter_mut().enumerate() {
                    let n = (k * PAYLOAD + j) as f64;
                    let s = 8000.0 * (2.0 * std::f64::consts::PI * f * n / 8000.0).sin();
                    *b = pcap::ulaw_encode(s as i16);
                }
                p
            })
            .collect::<Vec<_>>()
    };
    [row(440.0), row(1000.0)]
}

/// A batch sender over `sendmmsg(2)`: up to `BATCH` datagrams per syscall.
struct Batch {
    bufs: Vec<[u8; PKT]>,
    addrs: Vec<libc::sockaddr_in>,
    len: usize,
}

const BATCH: usize = 512;

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: vec![[0u8; PKT]; BATCH],
            // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            len: 0,
        }
    }

    fn push(&mut self, pkt: &[u8; PKT], dst: SocketAddrV4) {
        self.bufs[self.len] = *pkt;
        let a = &mut self.addrs[self.len];
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_port = dst.port().to_be();
        a.sin_addr = libc::in_addr {
            s_addr: u32::from(*dst.ip()).to_be(),
        };
        self.len += 1;
    }

    fn full(&self) -> bool {
        self.len == BATCH
    }

    /// Sends everything queued from `fd`; returns (sent, errors).
    fn flush(&mut self, fd: i32) -> (u64, u64) {
        let n = self.len;
        self.len = 0;
        if n == 0 {
            return (0, 0);
        }
        let mut iov: Vec<libc::iovec> = self.bufs[..n]
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: PKT,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = (0..n)
            .map(|i| {
                // SAFETY: msghdr/mmsghdr are plain old data; zero is valid before filling.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = &mut iov[i];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let (mut sent, mut errors) = (0u64, 0u64);
        let mut off = 0;
        while off < n {
            // SAFETY: msgs[off..n] point into iov/bufs/addrs, all alive for this call.
            let r = unsafe { libc::sendmmsg(fd, msgs[off..].as_mut_ptr(), (n - off) as u32, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    // socket buffer full: yield briefly rather than drop
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                // e.g. ECONNREFUSED from an earlier ICMP: skip one datagram
                errors += 1;
                off += 1;
                continue;
            }
            sent += r as u64;
            off += r as usize;
        }
        (sent, errors)
    }
}

fn calls(args: &[String]) {
    let o = parse_opts(args);
    let sip = UdpSocket::bind("127.0.0.1:0").expect("bind SIP socket");
    sip.set_nonblocking(true).unwrap();
    let local = sip.local_addr().unwrap();
    let local_ip = match local.ip() {
        std::net::IpAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let socks: Vec<UdpSocket> = (0..o.sockets)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind RTP socket");
            s.set_nonblocking(true).unwrap();
            let sock = socket2::SockRef::from(&s);
            let _ = sock.set_send_buffer_size(4 << 20);
            s
        })
        .collect();
    let sock_ports: Vec<u16> = socks
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();

    let pid = std::process::id();
    let mut calls: Vec<Call> = (0..o.calls)
        .map(|i| {
            let s0 = (2 * i) % o.sockets;
            let s1 = (2 * i + 1) % o.sockets;
            Call {
                call_id: format!("load-{pid}-{i}@{local_ip}"),
                from_tag: format!("ft{i}x{pid}"),
                to_tag: String::new(),
                state: State::Inviting,
                sent_at: Instant::now(),
                tries: 0,
                invite: Vec::new(),
                legs: [None, None],
                rtp_ports: [sock_ports[s0], sock_ports[s1]],
                bye: Vec::new(),
            }
        })
        .collect();
    let by_id: HashMap<String, usize> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| (c.call_id.clone(), i))
        .collect();
    let mut legs: Vec<Leg> = Vec::with_capacity(2 * o.calls);

    // ---- setup: INVITEs at --setup-rate, retransmitted at 500 ms, 1 s, 2 s ----
    let setup_start = Instant::now();
    let mut next = 0usize;
    let mut buf = vec![0u8; 65536];
    let deadline = setup_start
        + Duration::from_secs_f64(o.calls as f64 / o.setup_rate as f64)
        + Duration::from_secs(8);
    loop {
        let now = Instant::now();
        let allowed = ((now - setup_start).as_secs_f64() * o.setup_rate as f64) as usize + 1;
        while next < o.calls && next < allowed {
            let body = offer(local.ip(), calls[next].rtp_ports, next);
            let inv = sip_request("INVITE", &o, local, &calls[next], next, 1, &body);
            let _ = sip.send_to(&inv, o.target);
            calls[next].invite = inv;
            calls[next].sent_at = now;
            calls[next].tries = 1;
            next += 1;
        }
        // responses
        loop {
            match sip.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let Some((code, cid, method, tag, body)) = parse_response(&buf[..n]) else {
                        continue;
                    };
                    let Some(&i) = by_id.get(&cid) else { continue };
                    if method != "INVITE" || code < 200 {
                        continue;
                    }
                    let c = &mut calls[i];
                    if (200..300).contains(&code) {
                        c.to_tag = tag;
                        let ack = sip_request("ACK", &o, local, c, i, 1, "");
                        let _ = sip.send_to(&ack, o.target);
                        if c.state == State::Inviting {
                            let t = answer_targets(&body, local_ip);
                            for k in 0..2 {
                                if let Some(Some(dst)) = t.get(k) {
                                    let sock = (2 * i + k) % o.sockets;
                                    legs.push(Leg {
                                        dst: *dst,
                                        sock,
                                        seq: rand::random(),
                                        ts: rand::random(),
                                        ssrc: rand::random(),
                                        agent: k == 1,
                                    });
                                    c.legs[k] = Some(legs.len() - 1);
                                }
                            }
                            c.state = State::Up;
                        }
                    } else if c.state == State::Inviting {
                        eprintln!("rtp_load: call {i} refused with {code}");
                        c.state = State::Failed;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        // retransmissions
        for c in calls[..next].iter_mut() {
            if c.state == State::Inviting {
                let wait = Duration::from_millis(500) * (1 << (c.tries - 1).min(3));
                if now - c.sent_at >= wait {
                    if c.tries >= 4 {
                        c.state = State::Failed;
                    } else {
                        let _ = sip.send_to(&c.invite, o.target);
                        c.sent_at = now;
                        c.tries += 1;
                    }
                }
            }
        }
        let pending = calls.iter().filter(|c| c.state == State::Inviting).count();
        if next == o.calls && pending == 0 {
            break;
        }
        if now >= deadline {
            for c in calls.iter_mut().filter(|c| c.state == State::Inviting) {
                c.state = State::Failed;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let up = calls.iter().filter(|c| c.state == State::Up).count();
    eprintln!(
        "rtp_load: {up}/{} calls up in {:.2} s, {} legs; streaming {} s",
        o.calls,
        setup_start.elapsed().as_secs_f64(),
        legs.len(),
        o.secs
    );

    // ---- media: 4 sub-slots of 5 ms per 20 ms frame ----
    let tones = tone_table();
    let mut batches: Vec<Batch> = (0..o.sockets).map(|_| Batch::new()).collect();
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let slot = Duration::from_millis(FRAME_MS / SLOTS);
    let ticks = o.secs * 1000 / (FRAME_MS / SLOTS);
    let t0 = Instant::now() + Duration::from_millis(5);
    let (mut packets_sent, mut send_errors) = (0u64, 0u64);
    let mut lags: Vec<f64> = Vec::with_capacity(ticks as usize);
    let mut pkt = [0u8; PKT];
    pkt[0] = 0x80;
    for tick in 0..ticks {
        let due = t0 + slot * tick as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let sub = (tick % SLOTS) as usize;
        let frame = (tick / SLOTS) as usize;
        for (li, leg) in legs.iter_mut().enumerate() {
            // a leg belongs to the sub-slot of its call (legs of one call are adjacent)
            if (li / 2) % SLOTS as usize != sub {
                continue;
            }
            pkt[1] = if frame == 0 { 0x80 } else { 0 }; // marker on the first packet, PT 0
            pkt[2..4].copy_from_slice(&leg.seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&leg.ts.to_be_bytes());
            pkt[8..12].copy_from_slice(&leg.ssrc.to_be_bytes());
            pkt[12..].copy_from_slice(&tones[usize::from(leg.agent)][frame % 50]);
            leg.seq = leg.seq.wrapping_add(1);
            leg.ts = leg.ts.wrapping_add(PAYLOAD as u32);
            let b = &mut batches[leg.sock];
            b.push(&pkt, leg.dst);
            if b.full() {
                let (s, e) = b.flush(fds[leg.sock]);
                packets_sent += s;
                send_errors += e;
            }
        }
        for (k, b) in batches.iter_mut().enumerate() {
            let (s, e) = b.flush(fds[k]);
            packets_sent += s;
            send_errors += e;
        }
        lags.push(due.elapsed().as_secs_f64() * 1000.0);
        if tick % (1000 / (FRAME_MS / SLOTS)) == 0 && tick > 0 {
            eprintln!(
                "rtp_load: {} s, {packets_sent} packets, lag now {:.2} ms",
                tick * (FRAME_MS / SLOTS) / 1000,
                lags.last().unwrap()
            );
        }
        // answer retransmitted 200s (a lost ACK) without blocking
        while let Ok((n, _)) = sip.recv_from(&mut buf) {
            if let Some((code, cid, method, _, _)) = parse_response(&buf[..n]) {
                if let (Some(&i), true) = (by_id.get(&cid), method == "INVITE" && code == 200) {
                    let ack = sip_request("ACK", &o, local, &calls[i], i, 1, "");
                    let _ = sip.send_to(&ack, o.target);
                }
            }
        }
    }

    // ---- teardown: BYE every call, retransmitted at 500 ms ----
    let bye_start = Instant::now();
    for (i, c) in calls.iter_mut().enumerate() {
        if c.state == State::Up {
            c.bye = sip_request("BYE", &o, local, c, i, 2, "");
            let _ = sip.send_to(&c.bye, o.target);
            c.sent_at = Instant::now();
            c.tries = 1;
            c.state = State::ByeSent;
            if i % 200 == 199 {
                std::thread::sleep(Duration::from_millis(5)); // do not overrun the SIP socket
            }
        }
    }
    while bye_start.elapsed() < Duration::from_secs(10) {
        while let Ok((n, _)) = sip.recv_from(&mut buf) {
            if let Some((code, cid, method, _, _)) = parse_response(&buf[..n]) {
                if let Some(&i) = by_id.get(&cid) {
                    if method == "BYE" && code >= 200 && calls[i].state == State::ByeSent {
                        calls[i].state = if code == 200 {
                            State::Done
                        } else {
                            State::Failed
                        };
                    }
                }
            }
        }
        let now = Instant::now();
        let mut left = 0;
        for c in calls.iter_mut().filter(|c| c.state == State::ByeSent) {
            left += 1;
            if now - c.sent_at >= Duration::from_millis(500) && c.tries < 5 {
                let _ = sip.send_to(&c.bye, o.target);
                c.sent_at = now;
                c.tries += 1;
            }
        }
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let bye_ok = calls.iter().filter(|c| c.state == State::Done).count();
    lags.sort_by(f64::total_cmp);
    let p99 = lags
        .get((lags.len() as f64 * 0.99) as usize)
        .copied()
        .unwrap_or(0.0);
    let max = lags.last().copied().unwrap_or(0.0);
    println!(
        "{{\"calls\":{up},\"calls_requested\":{},\"calls_failed\":{},\"packets_sent\":{packets_sent},\
         \"send_errors\":{send_errors},\"send_lag_max_ms\":{max:.3},\"send_lag_p99_ms\":{p99:.3},\
         \"media_secs\":{},\"bye_ok\":{bye_ok}}}",
        o.calls,
        o.calls - up,
        o.secs
    );
}
