//! A scripted recording client: a tiny SIP UAC for calls to a recording URI (plain and SIPREC
//! INVITEs, ACK, BYE, CANCEL, raw bodies for hostile offers) and an RTP sender that replays a
//! schedule of datagrams at absolute deadlines, with injected loss, reordering, duplication,
//! SSRC changes and malformed packets.
#![allow(dead_code)] // each test binary uses a different subset

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::*;

// ---- SDP ---------------------------------------------------------------------------------

/// One offered m= line.
#[derive(Debug, Clone)]
pub struct MediaLine {
    pub port: u16,
    /// (payload type, encoding name, clock rate, channels)
    pub codecs: Vec<(u8, &'static str, u32, u8)>,
    pub label: Option<String>,
    pub direction: &'static str,
}

impl MediaLine {
    pub fn new(port: u16, codecs: &[(u8, &'static str, u32, u8)]) -> MediaLine {
        MediaLine {
            port,
            codecs: codecs.to_vec(),
            label: None,
            direction: "sendonly",
        }
    }
    pub fn label(mut self, l: &str) -> MediaLine {
        self.label = Some(l.to_string());
        self
    }
}

pub const PCMU: (u8, &str, u32, u8) = (0, "PCMU", 8000, 1);
pub const PCMA: (u8, &str, u32, u8) = (8, "PCMA", 8000, 1);
pub const G722: (u8, &str, u32, u8) = (9, "G722", 8000, 1);
pub const OPUS: (u8, &str, u32, u8) = (111, "opus", 48000, 2);
pub const TEL_EVENT: (u8, &str, u32, u8) = (101, "telephone-event", 8000, 1);

/// An SDP offer from `ip` with the given m= lines.
pub fn sdp_offer(ip: IpAddr, lines: &[MediaLine]) -> String {
    let sess = rand::random::<u32>();
    let mut s =
        format!("v=0\r\no=- {sess} 1 IN IP4 {ip}\r\ns=gridedge-e2e\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
    for m in lines {
        let fmts: Vec<String> = m.codecs.iter().map(|c| c.0.to_string()).collect();
        let _ = write!(s, "m=audio {} RTP/AVP {}\r\n", m.port, fmts.join(" "));
        for (pt, name, rate, ch) in &m.codecs {
            if *ch > 1 {
                let _ = write!(s, "a=rtpmap:{pt} {name}/{rate}/{ch}\r\n");
            } else {
                let _ = write!(s, "a=rtpmap:{pt} {name}/{rate}\r\n");
            }
            if *name == "telephone-event" {
                let _ = write!(s, "a=fmtp:{pt} 0-16\r\n");
            }
        }
        if let Some(l) = &m.label {
            let _ = write!(s, "a=label:{l}\r\n");
        }
        let _ = write!(s, "a=ptime:20\r\n{}\r\n", format_args!("a={}", m.direction));
    }
    s
}

/// One answered m= line: its port (0 = refused), formats and direction attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredLine {
    pub port: u16,
    pub formats: Vec<u8>,
    pub direction: Option<String>,
    pub rtpmap: Vec<String>,
}

/// The c= address and m= lines of an SDP answer (media-level c= overrides session-level).
pub fn parse_answer(body: &str) -> (Option<IpAddr>, Vec<AnsweredLine>) {
    let mut conn = None;
    let mut lines: Vec<AnsweredLine> = Vec::new();
    for l in body.lines() {
        let l = l.trim_end();
        if let Some(c) = l.strip_prefix("c=IN IP4 ") {
            if lines.is_empty() || conn.is_none() {
                conn = c.trim().parse().ok();
            }
        } else if let Some(m) = l.strip_prefix("m=audio ") {
            let mut it = m.split_whitespace();
            let port = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let _proto = it.next();
            lines.push(AnsweredLine {
                port,
                formats: it.filter_map(|f| f.parse().ok()).collect(),
                direction: None,
                rtpmap: Vec::new(),
            });
        } else if let Some(last) = lines.last_mut() {
            if let Some(a) = l.strip_prefix("a=") {
                if matches!(a, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                    last.direction = Some(a.to_string());
                } else if let Some(r) = a.strip_prefix("rtpmap:") {
                    last.rtpmap.push(r.to_string());
                }
            }
        }
    }
    (conn, lines)
}

// ---- SIP ---------------------------------------------------------------------------------

/// One call (one dialog) to a recording URI over UDP.
pub struct RecCall {
    pub conn: UdpConn,
    pub ruri: String,
    pub from_user: String,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    pub cseq: u32,
    pub invite_branch: String,
    pub invite_cseq: u32,
}

impl RecCall {
    /// A call from `from_user` to `sip:<uri_user>@<daemon udp>`.
    pub fn new(daemon_udp: SocketAddr, uri_user: &str, from_user: &str) -> RecCall {
        RecCall {
            conn: UdpConn::new("127.0.0.1", daemon_udp),
            ruri: format!("sip:{uri_user}@{daemon_udp}"),
            from_user: from_user.to_string(),
            call_id: format!("rec-{:016x}@gridedge-e2e", rand::random::<u64>()),
            from_tag: format!("{:08x}", rand::random::<u32>()),
            to_tag: None,
            cseq: 0,
            invite_branch: String::new(),
            invite_cseq: 0,
        }
    }

    fn request(
        &mut self,
        method: &str,
        cseq: u32,
        branch: &str,
        extra: &[(&str, String)],
        ctype: Option<&str>,
        body: &[u8],
    ) -> Vec<u8> {
        let local = self.conn.local_addr();
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let mut m = format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@127.0.0.1>;tag={tag}\r\n\
             To: <{ruri}>{to_tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             User-Agent: gridedge-e2e-recording\r\n",
            ruri = self.ruri,
            user = self.from_user,
            tag = self.from_tag,
            cid = self.call_id,
        );
        for (n, v) in extra {
            let _ = write!(m, "{n}: {v}\r\n");
        }
        if let Some(ct) = ctype {
            let _ = write!(m, "Content-Type: {ct}\r\n");
        }
        let _ = write!(m, "Content-Length: {}\r\n\r\n", body.len());
        let mut bytes = m.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    fn branch() -> String {
        format!("z9hG4bK{:016x}", rand::random::<u64>())
    }

    /// Sends an INVITE and returns its final response (provisional ones skipped; UDP
    /// retransmissions as a UAC does, until the first provisional). A 2xx is ACKed and its
    /// To tag kept.
    pub fn invite(
        &mut self,
        extra: &[(&str, String)],
        ctype: &str,
        body: &[u8],
    ) -> Option<SipResponse> {
        let r = self.send_invite(extra, ctype, body)?;
        let r = if r.code < 200 {
            self.await_invite_final(Duration::from_secs(10))?
        } else {
            r
        };
        self.after_final(&r);
        Some(r)
    }

    /// Sends an INVITE and returns the first response (provisional or final); no ACK.
    pub fn send_invite(
        &mut self,
        extra: &[(&str, String)],
        ctype: &str,
        body: &[u8],
    ) -> Option<SipResponse> {
        self.cseq += 1;
        self.invite_cseq = self.cseq;
        self.invite_branch = Self::branch();
        let (cseq, branch) = (self.cseq, self.invite_branch.clone());
        let msg = self.request("INVITE", cseq, &branch, extra, Some(ctype), body);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut t1 = Duration::from_millis(500);
        loop {
            self.conn.send(&msg).ok()?;
            let wait = t1.min(deadline.saturating_duration_since(Instant::now()));
            if let Some(r) = self.conn.recv_for_cseq(cseq, wait) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            t1 *= 2;
        }
    }

    /// Waits for the INVITE's final response.
    pub fn await_invite_final(&mut self, timeout: Duration) -> Option<SipResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.conn.recv_for_cseq(self.invite_cseq, left)?;
            if r.code >= 200 && r.cseq().map(|c| c.1) == Some("INVITE".into()) {
                return Some(r);
            }
        }
    }

    /// ACKs a final INVITE response (2xx: new transaction with the dialog's To tag; other:
    /// same branch, RFC 3261 §17.1.1.3) and remembers the To tag of a 2xx.
    pub fn after_final(&mut self, r: &SipResponse) {
        if r.code >= 200 && r.code < 300 {
            self.to_tag = r
                .header("To")
                .and_then(|t| t.split(";tag=").nth(1))
                .map(|t| t.split(';').next().unwrap_or(t).trim().to_string());
            let ack = self.request("ACK", self.invite_cseq, &Self::branch(), &[], None, b"");
            let _ = self.conn.send(&ack);
        } else if r.code >= 300 {
            let saved = self.to_tag.clone();
            self.to_tag = r
                .header("To")
                .and_then(|t| t.split(";tag=").nth(1))
                .map(|t| t.trim().to_string());
            let branch = self.invite_branch.clone();
            let ack = self.request("ACK", self.invite_cseq, &branch, &[], None, b"");
            let _ = self.conn.send(&ack);
            self.to_tag = saved;
        }
    }

    /// A plain INVITE with an SDP body.
    pub fn invite_sdp(&mut self, sdp: &str) -> Option<SipResponse> {
        self.invite(&[], "application/sdp", sdp.as_bytes())
    }

    /// CANCEL for the pending INVITE (same branch). Returns the CANCEL's response and the
    /// INVITE's final response if it arrived meanwhile (both share the CSeq number, so they
    /// are told apart by method).
    pub fn cancel(&mut self) -> (Option<SipResponse>, Option<SipResponse>) {
        let branch = self.invite_branch.clone();
        let cseq = self.invite_cseq;
        let msg = self.request("CANCEL", cseq, &branch, &[], None, b"");
        let deadline = Instant::now() + SIP_TIMEOUT;
        let mut invite_final = None;
        while Instant::now() < deadline {
            if self.conn.send(&msg).is_err() {
                break;
            }
            let until = (Instant::now() + Duration::from_millis(500)).min(deadline);
            while let Some(r) = self
                .conn
                .recv_response(until.saturating_duration_since(Instant::now()))
            {
                match r.cseq() {
                    Some((n, m)) if n == cseq && m == "CANCEL" => return (Some(r), invite_final),
                    Some((n, m)) if n == cseq && m == "INVITE" && r.code >= 200 => {
                        invite_final = Some(r)
                    }
                    _ => {}
                }
            }
        }
        (None, invite_final)
    }

    /// BYE within the dialog; returns its response.
    pub fn bye(&mut self) -> Option<SipResponse> {
        self.cseq += 1;
        let cseq = self.cseq;
        let msg = self.request("BYE", cseq, &Self::branch(), &[], None, b"");
        transact(&mut self.conn, &String::from_utf8_lossy(&msg), cseq)
    }
}

/// `X-Recording-Id` of a 200, or a panic naming the response.
pub fn recording_id(r: &SipResponse) -> String {
    r.header("X-Recording-Id")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("200 without X-Recording-Id:\n{}", r.raw))
}

/// The RTP destinations of an answer (port 0 lines as `None`).
pub fn rtp_targets(r: &SipResponse) -> Vec<Option<SocketAddr>> {
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let (ip, lines) = parse_answer(&body);
    let ip = ip.unwrap_or_else(|| "127.0.0.1".parse().unwrap());
    lines
        .iter()
        .map(|l| (l.port != 0).then(|| SocketAddr::new(ip, l.port)))
        .collect()
}

// ---- RTP schedules -----------------------------------------------------------------------

/// A datagram to send `at_ms` after the start of playback.
#[derive(Debug, Clone)]
pub struct Timed {
    pub at_ms: u64,
    pub data: Vec<u8>,
}

/// Injected impairments by packet index (indices into the nominal 20 ms sequence).
#[derive(Debug, Clone, Default)]
pub struct Impairments {
    /// Never sent.
    pub drop: Vec<usize>,
    /// Sent right after packet index + 1 (the pair arrives swapped).
    pub swap_with_next: Vec<usize>,
    /// Sent twice (the copy 5 ms later).
    pub duplicate: Vec<usize>,
}

/// Turns nominal 20 ms packets into a send schedule with `imp` applied.
pub fn schedule(packets: &[Vec<u8>], imp: &Impairments) -> Vec<Timed> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < packets.len() {
        let at = 20 * i as u64;
        if imp.swap_with_next.contains(&i) && i + 1 < packets.len() {
            // i+1 goes out at its own time, then i right after it
            let next_at = at + 20;
            if !imp.drop.contains(&(i + 1)) {
                out.push(Timed {
                    at_ms: next_at,
                    data: packets[i + 1].clone(),
                });
            }
            if !imp.drop.contains(&i) {
                out.push(Timed {
                    at_ms: next_at + 1,
                    data: packets[i].clone(),
                });
            }
            i += 2;
            continue;
        }
        if !imp.drop.contains(&i) {
            out.push(Timed {
                at_ms: at,
                data: packets[i].clone(),
            });
            if imp.duplicate.contains(&i) {
                out.push(Timed {
                    at_ms: at + 5,
                    data: packets[i].clone(),
                });
            }
        }
        i += 1;
    }
    out
}

/// Sends `sched` from `sock` to `dst`, each datagram at its absolute deadline from now
/// (sleep-until pacing: lateness never accumulates). Returns the worst lateness seen.
pub fn play(sock: &UdpSocket, dst: SocketAddr, sched: &[Timed]) -> Duration {
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    for t in sched {
        let due = start + Duration::from_millis(t.at_ms);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            worst = worst.max(now - due);
        }
        let _ = sock.send_to(&t.data, dst);
    }
    worst
}

/// Datagrams no RTP parser may accept, each with a name for failure messages.
pub fn malformed_rtp(ssrc: u32) -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = Vec::new();
    v.push(("empty", Vec::new()));
    v.push(("short (5 bytes)", vec![0x80, 0x00, 0x00, 0x01, 0x00]));
    let mut hdr = crate::pcap::rtp_packet(0, false, 1, 160, ssrc, &[0xff; 160]);
    hdr[0] = 0x00; // version 0
    v.push(("version 0", hdr));
    let mut csrc = crate::pcap::rtp_packet(0, false, 2, 320, ssrc, &[0xff; 8]);
    csrc[0] = 0x8f; // 15 CSRCs = 60 bytes that are not there
    v.push(("CSRC count past the end", csrc));
    let mut ext = crate::pcap::rtp_packet(0, false, 3, 480, ssrc, &[0xbe, 0xde, 0xff, 0xff]);
    ext[0] = 0x90; // X bit, extension length 0xffff words
    v.push(("extension past the end", ext));
    let mut pad = crate::pcap::rtp_packet(0, false, 4, 640, ssrc, &[0xff; 20]);
    pad[0] = 0xa0; // P bit
    let last = pad.len() - 1;
    pad[last] = 200; // padding longer than the packet
    v.push(("padding past the start", pad));
    let mut pad0 = crate::pcap::rtp_packet(0, false, 5, 800, ssrc, &[0xff; 20]);
    pad0[0] = 0xa0;
    let last = pad0.len() - 1;
    pad0[last] = 0; // padding length 0 with P set
    v.push(("padding length 0", pad0));
    v.push((
        "unnegotiated payload type 77",
        crate::pcap::rtp_packet(77, false, 6, 960, ssrc, &[0x11; 160]),
    ));
    let mut seed = 0x9e37_79b9u32;
    let garbage: Vec<u8> = (0..1200)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed & 0x3f) as u8 // top bits 00: never version 2
        })
        .collect();
    v.push(("garbage", garbage));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted UAS: 100 + 200 (To tag, SDP, X-Recording-Id) to INVITE, 200 to BYE; reports
    /// the request lines it saw (with the To header of ACK and BYE).
    fn scripted_uas() -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = sock.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let first = text.lines().next().unwrap_or("").to_string();
                let to = text
                    .lines()
                    .find(|l| l.starts_with("To:"))
                    .unwrap_or("")
                    .to_string();
                seen.push(format!("{first} | {to}"));
                let keep: Vec<&str> = text
                    .split("\r\n")
                    .filter(|l| {
                        ["Via:", "From:", "Call-ID:", "CSeq:"]
                            .iter()
                            .any(|p| l.starts_with(p))
                    })
                    .collect();
                let reply = |code: &str, body: &str, extra: &str| {
                    format!(
                        "SIP/2.0 {code}\r\n{}\r\n{to};tag=uas1\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                        keep.join("\r\n"),
                        body.len()
                    )
                };
                if first.starts_with("INVITE") {
                    sock.send_to(reply("100 Trying", "", "").as_bytes(), from)
                        .unwrap();
                    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=recvonly\r\n";
                    let extra = "X-Recording-Id: rec_1\r\nContent-Type: application/sdp\r\n";
                    sock.send_to(reply("200 OK", sdp, extra).as_bytes(), from)
                        .unwrap();
                } else if first.starts_with("BYE") {
                    sock.send_to(reply("200 OK", "", "").as_bytes(), from)
                        .unwrap();
                    break;
                }
            }
            seen
        });
        (addr, h)
    }

    #[test]
    fn rec_call_invites_acks_and_byes() {
        let (uas, h) = scripted_uas();
        let mut call = RecCall::new(uas, "record", "5550100");
        let offer = sdp_offer(
            "127.0.0.1".parse().unwrap(),
            &[MediaLine::new(6000, &[PCMU, TEL_EVENT]).label("1")],
        );
        assert!(offer.contains("m=audio 6000 RTP/AVP 0 101\r\n"), "{offer}");
        assert!(
            offer.contains("a=label:1\r\na=ptime:20\r\na=sendonly\r\n"),
            "{offer}"
        );
        let r = call.invite_sdp(&offer).expect("final answer");
        assert_eq!(r.code, 200);
        assert_eq!(recording_id(&r), "rec_1");
        assert_eq!(
            rtp_targets(&r),
            vec![Some("127.0.0.1:40002".parse().unwrap())]
        );
        let (_, lines) = parse_answer(&String::from_utf8_lossy(&r.body));
        assert_eq!(lines[0].direction.as_deref(), Some("recvonly"));
        assert_eq!(lines[0].formats, vec![0, 101]);
        assert_eq!(call.bye().map(|r| r.code), Some(200));
        let seen = h.join().unwrap();
        assert!(
            seen[0].starts_with("INVITE sip:record@127.0.0.1:"),
            "{seen:?}"
        );
        assert!(
            seen[1].starts_with("ACK ") && seen[1].contains("tag=uas1"),
            "{seen:?}"
        );
        assert!(
            seen[2].starts_with("BYE ") && seen[2].contains("tag=uas1"),
            "{seen:?}"
        );
    }

    #[test]
    fn schedule_applies_impairments() {
        let pkts: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i]).collect();
        let imp = Impairments {
            drop: vec![1],
            swap_with_next: vec![2],
            duplicate: vec![4],
        };
        let s = schedule(&pkts, &imp);
        let order: Vec<u8> = s.iter().map(|t| t.data[0]).collect();
        assert_eq!(order, vec![0, 3, 2, 4, 4, 5]);
        assert!(s.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }
}
