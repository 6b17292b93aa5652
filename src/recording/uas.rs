//! The recording server's SIP side: a user-agent server for INVITEs to the recording URIs.
//!
//! Sans-IO. The shell hands it parsed requests with their [`Flow`] and `now`, and a
//! [`PortSource`] that has media ports already bound; it answers (200 with the SDP answer,
//! 4xx/5xx refusals, 481 for unknown dialogs), keeps the dialogs, retransmits its 200 over UDP
//! until the ACK comes (RFC 3261 §13.3.1.4), and tells the media side what to start, change and
//! stop through [`MediaAction`]s.
//!
//! Why answer at once (no 180): a recorder has nobody to alert, and an SRC (an SBC, or
//! FreeSWITCH forking a call) wants media flowing as soon as possible. So a CANCEL always finds
//! the INVITE answered; RFC 3261 §9.2 then says the CANCEL gets 200 and changes nothing, and
//! the SRC ends the session with a BYE.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::clock::Now;
use crate::sip::header::{CSeq, NameAddr, SipUri};
use crate::sip::location::{Flow, Transport};
use crate::sip::message::{HeaderName, Method, Request, Response};
use crate::sip::registrar::reply_with_tag;

use super::offer::{OfferError, ParsedOffer, Role, SessionMeta, StreamPlan};

/// RFC 3261 timers for the 2xx retransmission: start at T1, double up to T2, give up at 64·T1.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const ACK_WAIT: Duration = Duration::from_secs(32);

/// The methods a recording URI accepts.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS";

/// A recording's id: the grid's `recordId` and the CDR's SRFMSGID. `r`, 11 hex digits of Unix
/// milliseconds and 8 random hex digits: unique, sortable by start, and inside the safe
/// alphabet the download route accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(String);

impl RecordId {
    pub fn new(unix_ms: u64, random: u32) -> RecordId {
        RecordId(format!("r{:011x}{random:08x}", unix_ms & 0xfff_ffff_ffff))
    }

    /// An id read back from disk or the index (already validated by whoever stored it).
    pub fn from_stored(s: impl Into<String>) -> RecordId {
        RecordId(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ports for media, bound before the answer names them (so no packet can arrive at a port
/// nobody listens on). Implemented by the shell's port pool; tests use a counter.
pub trait PortSource {
    /// `n` even RTP ports (each with RTP+1 for RTCP), or `None` when the pool is exhausted.
    fn take(&mut self, n: usize) -> Option<Vec<u16>>;
    fn give_back(&mut self, ports: &[u16]);
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Bye,
    /// The 200 was never acknowledged: the SRC is gone.
    NoAck,
    /// No RTP on any stream for `rtp_timeout_secs`.
    RtpTimeout,
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Bye => "bye",
            EndReason::NoAck => "no_ack",
            EndReason::RtpTimeout => "rtp_timeout",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// What the media side must do.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaAction {
    Start {
        record_id: RecordId,
        call_id: String,
        streams: Vec<StreamPlan>,
        meta: SessionMeta,
        started_ms: u64,
    },
    /// A re-INVITE changed codecs or added a stream; ports of kept streams stay the same.
    Update {
        record_id: RecordId,
        streams: Vec<StreamPlan>,
    },
    Stop {
        record_id: RecordId,
        reason: EndReason,
    },
}

/// The result of one request.
#[derive(Debug, Default)]
pub struct Outcome {
    pub reply: Option<Vec<u8>>,
    pub status: Option<u16>,
    pub actions: Vec<MediaAction>,
}

/// Something to send that no request asked for: a 2xx retransmission or our own BYE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub bytes: Vec<u8>,
    pub to: SocketAddr,
    /// The listener to send from (the one the SRC talked to: its NAT lets only that back in).
    pub from: SocketAddr,
    pub transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DialogKey {
    call_id: String,
    from_tag: String,
}

#[derive(Debug)]
struct Dialog {
    record_id: RecordId,
    call_id: String,
    /// The INVITE's CSeq and top Via branch, to recognise retransmissions and CANCELs.
    invite_cseq: u32,
    invite_branch: String,
    /// The last 2xx, replayed to a retransmitted INVITE and until the ACK.
    last_ok: Vec<u8>,
    acked: bool,
    retransmit_at: Instant,
    retransmit_every: Duration,
    give_up_at: Instant,
    flow: Flow,
    /// Headers for our own BYE: their From (our To), our To with its tag (our From).
    their_from: String,
    our_to: String,
    remote_target: String,
    /// Ports in use, by m= line index (0 where refused).
    ports: Vec<u16>,
    /// The side each line was put on by the first INVITE: a re-INVITE (hold, codec change)
    /// must not move a stream to the other channel.
    roles: Vec<Option<Role>>,
    sdp_version: u64,
    session_id: u64,
    our_cseq: u32,
}

pub struct UasConfig {
    pub uris: Vec<String>,
    pub media_ip: IpAddr,
    pub max_concurrent: usize,
    /// Whether Opus can be decoded here (libopus found).
    pub opus: bool,
}

pub struct Uas {
    cfg: UasConfig,
    dialogs: HashMap<DialogKey, Dialog>,
    /// Dialogs ended in the last 32 s: a UDP INVITE retransmission that crossed our 200 and
    /// arrives after a quick BYE must not start a second recording. Bounded.
    ended: std::collections::VecDeque<(Instant, DialogKey)>,
    /// Record id → dialog, for stops decided by the media side.
    by_record: HashMap<RecordId, DialogKey>,
    rng: u64,
}

fn header<'a>(req: &'a Request, name: &HeaderName) -> Option<&'a str> {
    req.headers.get(name)
}

fn user_of(uri: &str) -> Option<String> {
    SipUri::parse(uri).ok().and_then(|u| u.user)
}

fn top_branch(req: &Request) -> String {
    header(req, &HeaderName::Via)
        .and_then(|v| crate::sip::header::parse_vias(std::iter::once(v)).ok())
        .and_then(|v| v.first().and_then(|v| v.branch().map(str::to_owned)))
        .unwrap_or_default()
}

impl Uas {
    pub fn new(cfg: UasConfig, seed: u64) -> Uas {
        Uas {
            cfg,
            dialogs: HashMap::new(),
            ended: std::collections::VecDeque::new(),
            by_record: HashMap::new(),
            rng: seed | 1,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: ids and branches only need to be unpredictable enough not to collide.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn active(&self) -> usize {
        self.dialogs.len()
    }

    /// Whether this request is ours: sent to a recording URI, or inside one of our dialogs.
    pub fn claims(&self, req: &Request) -> bool {
        if !matches!(
            req.method,
            Method::Invite | Method::Ack | Method::Bye | Method::Cancel
        ) {
            return false;
        }
        if user_of(&req.uri).is_some_and(|u| self.cfg.uris.contains(&u)) {
            return true;
        }
        Self::key(req).is_some_and(|k| self.dialogs.contains_key(&k))
    }

    fn key(req: &Request) -> Option<DialogKey> {
        let call_id = header(req, &HeaderName::CallId)?.trim().to_owned();
        let from = NameAddr::parse(header(req, &HeaderName::From)?).ok()?;
        Some(DialogKey {
            call_id,
            from_tag: from.tag()?.to_owned(),
        })
    }

    /// One request. `is_agent` tells whether a user part is a known extension (which side of
    /// the stereo file a plain INVITE's audio goes to).
    pub fn handle(
        &mut self,
        req: &Request,
        flow: &Flow,
        now: Now,
        ports: &mut dyn PortSource,
        is_agent: &dyn Fn(&str) -> bool,
    ) -> Outcome {
        match req.method {
            Method::Invite => self.invite(req, flow, now, ports, is_agent),
            Method::Ack => {
                // Only the ACK of the latest INVITE stops its 2xx: a late ACK of an earlier
                // one must not silence a re-INVITE's answer.
                let seq = header(req, &HeaderName::CSeq).and_then(|c| CSeq::parse(c).ok());
                if let Some(d) = Self::key(req).and_then(|k| self.dialogs.get_mut(&k)) {
                    if seq.is_some_and(|c| c.seq == d.invite_cseq) {
                        d.acked = true;
                    }
                }
                Outcome::default()
            }
            Method::Bye => self.bye(req, flow, now, ports),
            Method::Cancel => self.cancel(req, flow),
            _ => Outcome::default(),
        }
    }

    fn reply(&self, req: &Request, flow: &Flow, code: u16, reason: &str) -> Outcome {
        let mut r = reply_with_tag(req, code, reason);
        if code == 405 || code == 501 {
            r.headers.push(HeaderName::Allow, ALLOW);
        }
        // Out of capacity or ports: a retry in a few seconds may well succeed.
        if code == 503 {
            r.headers.push(HeaderName::Other("Retry-After".into()), "5");
        }
        Outcome {
            reply: Some(encode(&r, req, flow)),
            status: Some(code),
            actions: vec![],
        }
    }

    fn invite(
        &mut self,
        req: &Request,
        flow: &Flow,
        now: Now,
        ports: &mut dyn PortSource,
        is_agent: &dyn Fn(&str) -> bool,
    ) -> Outcome {
        let Some(key) = Self::key(req) else {
            return self.reply(
                req,
                flow,
                400,
                "Bad Request (From tag and Call-ID required)",
            );
        };
        let Some(cseq) = header(req, &HeaderName::CSeq).and_then(|c| CSeq::parse(c).ok()) else {
            return self.reply(req, flow, 400, "Bad Request (CSeq)");
        };
        let to_tagged = header(req, &HeaderName::To)
            .and_then(|t| NameAddr::parse(t).ok())
            .is_some_and(|t| t.tag().is_some());
        if let Some(d) = self.dialogs.get_mut(&key) {
            if cseq.seq == d.invite_cseq {
                // A retransmission: the same answer again, nothing re-negotiated.
                return Outcome {
                    reply: Some(d.last_ok.clone()),
                    status: Some(200),
                    actions: vec![],
                };
            }
            if cseq.seq < d.invite_cseq {
                return self.reply(req, flow, 500, "Server Internal Error (CSeq out of order)");
            }
            return self.reinvite(req, flow, now, key, cseq.seq, ports);
        }
        if to_tagged {
            return self.reply(req, flow, 481, "Call/Transaction Does Not Exist");
        }
        while self
            .ended
            .front()
            .is_some_and(|(at, _)| now.instant.saturating_duration_since(*at) > ACK_WAIT)
        {
            self.ended.pop_front();
        }
        if self.ended.iter().any(|(_, k)| *k == key) {
            return self.reply(
                req,
                flow,
                481,
                "Call/Transaction Does Not Exist (already ended)",
            );
        }
        if self.dialogs.len() >= self.cfg.max_concurrent {
            return self.reply(req, flow, 503, "Service Unavailable (recording capacity)");
        }
        let offer = match ParsedOffer::read(
            header(req, &HeaderName::ContentType),
            &req.body,
            self.cfg.opus,
        ) {
            Ok(o) => o,
            Err(e) => return self.refuse(req, flow, &e),
        };
        let wanted = offer.wanted_streams();
        let Some(got) = ports.take(wanted.len()) else {
            return self.reply(req, flow, 503, "Service Unavailable (no media ports)");
        };
        let mut by_line = vec![0u16; offer.line_count()];
        for (&i, &p) in wanted.iter().zip(&got) {
            by_line[i] = p;
        }
        let from_user = header(req, &HeaderName::From)
            .and_then(|f| NameAddr::parse(f).ok())
            .and_then(|f| f.uri.user);
        let session_id = self.random() >> 1;
        let (sdp, streams, meta) = match offer.answer(
            &by_line,
            self.cfg.media_ip,
            session_id,
            1,
            from_user.as_deref(),
            is_agent,
        ) {
            Ok(x) => x,
            Err(e) => {
                ports.give_back(&got);
                return self.refuse(req, flow, &e);
            }
        };
        // Ports the answer did not use go straight back.
        let used: Vec<u16> = streams.iter().map(|s| s.port).collect();
        let unused: Vec<u16> = got.iter().copied().filter(|p| !used.contains(p)).collect();
        ports.give_back(&unused);
        let by_line: Vec<u16> = by_line
            .iter()
            .map(|p| if used.contains(p) { *p } else { 0 })
            .collect();

        let random = self.random() as u32;
        let record_id = RecordId::new(now.unix_ms, random);
        let mut ok = reply_with_tag(req, 200, "OK");
        self.decorate_ok(&mut ok, req, flow, &record_id, sdp);
        let bytes = encode(&ok, req, flow);
        let our_to = ok
            .headers
            .get(&HeaderName::To)
            .unwrap_or_default()
            .to_owned();
        let remote_target = header(req, &HeaderName::Contact)
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|c| c.uri.to_string())
            .unwrap_or_else(|| req.uri.clone());
        self.dialogs.insert(
            key.clone(),
            Dialog {
                record_id: record_id.clone(),
                call_id: key.call_id.clone(),
                invite_cseq: cseq.seq,
                invite_branch: top_branch(req),
                last_ok: bytes.clone(),
                acked: flow.transport != Transport::Udp,
                retransmit_at: now.instant + T1,
                retransmit_every: T1,
                give_up_at: now.instant + ACK_WAIT,
                flow: *flow,
                their_from: header(req, &HeaderName::From)
                    .unwrap_or_default()
                    .to_owned(),
                our_to,
                remote_target,
                roles: line_roles(&streams, by_line.len()),
                ports: by_line,
                sdp_version: 1,
                session_id,
                our_cseq: 1,
            },
        );
        self.by_record.insert(record_id.clone(), key.clone());
        Outcome {
            reply: Some(bytes),
            status: Some(200),
            actions: vec![MediaAction::Start {
                record_id,
                call_id: key.call_id,
                streams,
                meta,
                started_ms: now.unix_ms,
            }],
        }
    }

    fn decorate_ok(
        &self,
        ok: &mut Response,
        req: &Request,
        flow: &Flow,
        record_id: &RecordId,
        sdp: String,
    ) {
        let user = user_of(&req.uri).unwrap_or_else(|| "record".into());
        let transport = match flow.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        };
        let host = host_text(self.advertised(flow));
        ok.headers.push(
            HeaderName::Contact,
            format!(
                "<sip:{user}@{host}:{};transport={transport}>",
                flow.local.port()
            ),
        );
        ok.headers.push(HeaderName::Allow, ALLOW);
        ok.headers.push(
            HeaderName::Other("X-Recording-Id".into()),
            record_id.as_str(),
        );
        ok.headers.push(HeaderName::ContentType, "application/sdp");
        ok.body = sdp.into_bytes();
    }

    /// The address the SRC can reach us at: the listener's, unless it is bound to a wildcard
    /// (`0.0.0.0:5060` in production), then the media address.
    fn advertised(&self, flow: &Flow) -> IpAddr {
        if flow.local.ip().is_unspecified() {
            self.cfg.media_ip
        } else {
            flow.local.ip()
        }
    }

    /// Whether the request belongs to a dialog of ours (ACK, BYE, re-INVITE, CANCEL).
    pub fn in_dialog(&self, req: &Request) -> bool {
        Self::key(req).is_some_and(|k| self.dialogs.contains_key(&k))
    }

    fn refuse(&self, req: &Request, flow: &Flow, e: &OfferError) -> Outcome {
        let (code, reason) = e.status();
        let text: String = format!("{reason} ({e})")
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        let mut r = reply_with_tag(req, code, &text);
        if code == 488 {
            r.headers.push(
                HeaderName::Other("Warning".into()),
                "305 gridedge \"Incompatible media format\"",
            );
        }
        if code == 415 {
            r.headers.push(
                HeaderName::Other("Accept".into()),
                "application/sdp, multipart/mixed",
            );
        }
        Outcome {
            reply: Some(encode(&r, req, flow)),
            status: Some(code),
            actions: vec![],
        }
    }

    fn reinvite(
        &mut self,
        req: &Request,
        flow: &Flow,
        now: Now,
        key: DialogKey,
        seq: u32,
        ports: &mut dyn PortSource,
    ) -> Outcome {
        let offer = match ParsedOffer::read(
            header(req, &HeaderName::ContentType),
            &req.body,
            self.cfg.opus,
        ) {
            Ok(o) => o,
            Err(e) => return self.refuse(req, flow, &e),
        };
        let Some(d) = self.dialogs.get(&key) else {
            return self.reply(req, flow, 481, "Call/Transaction Does Not Exist");
        };
        // Keep every stream on its port; only lines that are new get one.
        let mut by_line = d.ports.clone();
        // RFC 3264 §8 forbids removing m= lines; an SRC that does anyway gets the ports of
        // the lines it cut returned here, or they would never be.
        let cut: Vec<u16> = by_line
            .iter()
            .skip(offer.line_count())
            .copied()
            .filter(|&p| p != 0)
            .collect();
        by_line.resize(offer.line_count(), 0);
        let wanted = offer.wanted_streams();
        let need: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| by_line[i] == 0)
            .collect();
        let fresh = if need.is_empty() {
            vec![]
        } else {
            match ports.take(need.len()) {
                Some(p) => p,
                None => return self.reply(req, flow, 503, "Service Unavailable (no media ports)"),
            }
        };
        for (&i, &p) in need.iter().zip(&fresh) {
            by_line[i] = p;
        }
        // A line the new offer no longer wants gives its port back.
        let dropped: Vec<u16> = by_line
            .iter()
            .enumerate()
            .filter(|(i, p)| **p != 0 && !wanted.contains(i))
            .map(|(_, p)| *p)
            .collect();
        for p in by_line.iter_mut() {
            if dropped.contains(p) {
                *p = 0;
            }
        }
        let (session_id, version) = (d.session_id, d.sdp_version + 1);
        let from_user = header(req, &HeaderName::From)
            .and_then(|f| NameAddr::parse(f).ok())
            .and_then(|f| f.uri.user);
        let answered = offer.answer(
            &by_line,
            self.cfg.media_ip,
            session_id,
            version,
            from_user.as_deref(),
            &|_| false,
        );
        let (sdp, mut streams, _meta) = match answered {
            Ok(x) => x,
            Err(e) => {
                ports.give_back(&fresh);
                return self.refuse(req, flow, &e);
            }
        };
        ports.give_back(&dropped);
        ports.give_back(&cut);
        let mut roles = d.roles.clone();
        roles.resize(by_line.len(), None);
        for s in &mut streams {
            match roles.get(s.line).copied().flatten() {
                Some(kept) => s.role = kept,
                None => roles[s.line] = Some(s.role),
            }
        }
        let record_id = d.record_id.clone();
        // The dialog's To tag must stay the one of the first 2xx: reply_with_tag keeps a
        // present tag, and a re-INVITE carries ours.
        let mut ok = reply_with_tag(req, 200, "OK");
        self.decorate_ok(&mut ok, req, flow, &record_id, sdp);
        let bytes = encode(&ok, req, flow);
        let d = self.dialogs.get_mut(&key).expect("looked up above");
        d.invite_cseq = seq;
        d.invite_branch = top_branch(req);
        d.last_ok = bytes.clone();
        d.acked = flow.transport != Transport::Udp;
        d.retransmit_at = now.instant + T1;
        d.retransmit_every = T1;
        d.give_up_at = now.instant + ACK_WAIT;
        d.sdp_version = version;
        d.ports = by_line;
        d.roles = roles;
        Outcome {
            reply: Some(bytes),
            status: Some(200),
            actions: vec![MediaAction::Update { record_id, streams }],
        }
    }

    fn bye(&mut self, req: &Request, flow: &Flow, now: Now, ports: &mut dyn PortSource) -> Outcome {
        let Some(key) = Self::key(req) else {
            return self.reply(req, flow, 481, "Call/Transaction Does Not Exist");
        };
        let Some(d) = self.dialogs.remove(&key) else {
            return self.reply(req, flow, 481, "Call/Transaction Does Not Exist");
        };
        self.remember_ended(key, now.instant);
        self.by_record.remove(&d.record_id);
        ports.give_back(&live_ports(&d.ports));
        let mut out = self.reply(req, flow, 200, "OK");
        out.actions.push(MediaAction::Stop {
            record_id: d.record_id,
            reason: EndReason::Bye,
        });
        out
    }

    fn remember_ended(&mut self, key: DialogKey, at: Instant) {
        if self.ended.len() >= 16_384 {
            self.ended.pop_front();
        }
        self.ended.push_back((at, key));
    }

    fn cancel(&mut self, req: &Request, flow: &Flow) -> Outcome {
        // Every INVITE is answered at once, so a CANCEL finds its transaction completed:
        // 200 to the CANCEL, nothing else (RFC 3261 §9.2); the SRC will send a BYE.
        let branch = top_branch(req);
        let known = Self::key(req)
            .and_then(|k| self.dialogs.get(&k))
            .is_some_and(|d| d.invite_branch == branch);
        if known {
            self.reply(req, flow, 200, "OK")
        } else {
            self.reply(req, flow, 481, "Call/Transaction Does Not Exist")
        }
    }

    /// Timers: 2xx retransmissions over UDP, and dialogs whose ACK never came.
    pub fn poll(
        &mut self,
        now: Instant,
        ports: &mut dyn PortSource,
    ) -> (Vec<Outgoing>, Vec<MediaAction>) {
        let mut out = Vec::new();
        let mut actions = Vec::new();
        let mut dead = Vec::new();
        for (key, d) in &mut self.dialogs {
            if d.acked {
                continue;
            }
            if now >= d.give_up_at {
                dead.push(key.clone());
                continue;
            }
            if now >= d.retransmit_at {
                out.push(Outgoing {
                    bytes: d.last_ok.clone(),
                    to: d.flow.source,
                    from: d.flow.local,
                    transport: d.flow.transport,
                });
                d.retransmit_every = (d.retransmit_every * 2).min(T2);
                d.retransmit_at = now + d.retransmit_every;
            }
        }
        for key in dead {
            if let Some(d) = self.dialogs.remove(&key) {
                self.remember_ended(key.clone(), now);
                self.by_record.remove(&d.record_id);
                ports.give_back(&live_ports(&d.ports));
                // RFC 3261 §13.3.1.4: no ACK within 64·T1 — confirm and end it with a BYE.
                out.extend(self.bye_for(&d));
                actions.push(MediaAction::Stop {
                    record_id: d.record_id,
                    reason: EndReason::NoAck,
                });
            }
        }
        (out, actions)
    }

    /// The media side ended a recording (RTP timeout, shutdown): forget the dialog and say
    /// goodbye to the SRC.
    pub fn end(&mut self, record_id: &RecordId, ports: &mut dyn PortSource) -> Option<Outgoing> {
        let key = self.by_record.remove(record_id)?;
        let d = self.dialogs.remove(&key)?;
        ports.give_back(&live_ports(&d.ports));
        self.bye_for(&d)
    }

    fn bye_for(&mut self, d: &Dialog) -> Option<Outgoing> {
        // Only datagrams can be sent without the connection's writer; a stream SRC notices
        // the silence itself (and its own session timers end the dialog).
        if d.flow.transport != Transport::Udp {
            return None;
        }
        let branch = self.random();
        let local = d.flow.local;
        let via_host = host_text(self.advertised(&d.flow));
        let mut req = Request {
            method: Method::Bye,
            uri: d.remote_target.clone(),
            headers: Default::default(),
            body: vec![],
        };
        req.headers.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/UDP {via_host}:{};branch=z9hG4bK{branch:016x};rport",
                local.port()
            ),
        );
        req.headers.push(HeaderName::MaxForwards, "70");
        req.headers.push(HeaderName::From, d.our_to.clone());
        req.headers.push(HeaderName::To, d.their_from.clone());
        req.headers.push(HeaderName::CallId, d.call_id.clone());
        req.headers
            .push(HeaderName::CSeq, format!("{} BYE", d.our_cseq + 1));
        let mut bytes = Vec::with_capacity(512);
        req.write_to(&mut bytes);
        Some(Outgoing {
            bytes,
            to: d.flow.source,
            from: local,
            transport: Transport::Udp,
        })
    }

    /// Every live recording, for shutdown.
    pub fn record_ids(&self) -> Vec<RecordId> {
        self.by_record.keys().cloned().collect()
    }
}

fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

fn line_roles(streams: &[StreamPlan], lines: usize) -> Vec<Option<Role>> {
    let mut roles = vec![None; lines];
    for s in streams {
        if let Some(r) = roles.get_mut(s.line) {
            *r = Some(s.role);
        }
    }
    roles
}

fn live_ports(p: &[u16]) -> Vec<u16> {
    p.iter().copied().filter(|&p| p != 0).collect()
}

/// Stamps `received`/`rport` like the registrar does and encodes.
fn encode(resp: &Response, req: &Request, flow: &Flow) -> Vec<u8> {
    crate::sip::endpoint::encode_reply(resp.clone(), req, flow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Limits, Message};

    struct Counter {
        next: u16,
        out: Vec<u16>,
        cap: usize,
    }

    impl PortSource for Counter {
        fn take(&mut self, n: usize) -> Option<Vec<u16>> {
            if self.out.len() + n > self.cap {
                return None;
            }
            let v: Vec<u16> = (0..n)
                .map(|_| {
                    self.next += 2;
                    self.next
                })
                .collect();
            self.out.extend(&v);
            Some(v)
        }
        fn give_back(&mut self, ports: &[u16]) {
            self.out.retain(|p| !ports.contains(p));
        }
    }

    fn pool() -> Counter {
        Counter {
            next: 40_000,
            out: vec![],
            cap: 8,
        }
    }

    fn uas(max: usize) -> Uas {
        Uas::new(
            UasConfig {
                uris: vec!["record".into()],
                media_ip: "127.0.0.1".parse().unwrap(),
                max_concurrent: max,
                opus: false,
            },
            7,
        )
    }

    fn flow() -> Flow {
        Flow {
            transport: Transport::Udp,
            source: "127.0.0.1:5080".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            connection: None,
        }
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";

    fn request(method: &str, cseq: u32, to_tag: Option<&str>, body: &str) -> Request {
        let to = match to_tag {
            Some(t) => format!("<sip:record@127.0.0.1>;tag={t}"),
            None => "<sip:record@127.0.0.1>".into(),
        };
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        let text = format!(
            "{method} sip:record@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-{cseq}-{method};rport\r\nFrom: <sip:src@127.0.0.1>;tag=abc\r\nTo: {to}\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:src@127.0.0.1:5080>\r\nMax-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match Message::parse(text.as_bytes(), &Limits::default()).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    /// One request from the test SRC, with no known extension.
    fn send(u: &mut Uas, p: &mut Counter, req: &Request, now: Now) -> Outcome {
        u.handle(req, &flow(), now, p, &|_| false)
    }

    fn status(o: &Outcome) -> u16 {
        o.status.unwrap()
    }

    fn header_of(bytes: &[u8], name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(bytes);
        text.lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
    }

    #[test]
    fn invite_is_answered_with_sdp_and_a_record_id_then_bye_stops() {
        let mut u = uas(10);
        let mut p = pool();
        let now = Now::system();
        let inv = request("INVITE", 1, None, SDP);
        assert!(u.claims(&inv));
        let o = send(&mut u, &mut p, &inv, now);
        assert_eq!(status(&o), 200);
        let reply = o.reply.unwrap();
        let id = header_of(&reply, "X-Recording-Id").unwrap();
        assert!(id.starts_with('r') && id.len() == 20, "{id}");
        let body = String::from_utf8_lossy(&reply);
        assert!(body.contains("a=recvonly"), "{body}");
        assert!(body.contains("m=audio 40002 RTP/AVP 0"), "{body}");
        let [MediaAction::Start { streams, .. }] = &o.actions[..] else {
            panic!("{:?}", o.actions)
        };
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].role, super::super::offer::Role::Customer);

        // A retransmitted INVITE gets the same answer and starts nothing.
        let again = send(&mut u, &mut p, &inv, now);
        assert_eq!(again.reply.as_deref(), Some(&reply[..]));
        assert!(again.actions.is_empty());

        let to_tag = to_tag(&reply);
        let bye = request("BYE", 2, Some(&to_tag), "");
        assert!(u.claims(&bye));
        let o = send(&mut u, &mut p, &bye, now);
        assert_eq!(status(&o), 200);
        assert!(matches!(
            &o.actions[..],
            [MediaAction::Stop {
                reason: EndReason::Bye,
                ..
            }]
        ));
        assert!(p.out.is_empty(), "ports returned");
        // The dialog is gone: a second BYE is 481.
        let o = send(&mut u, &mut p, &bye, now);
        assert_eq!(status(&o), 481);
    }

    #[test]
    fn agent_sender_goes_to_the_agent_side() {
        let mut u = uas(10);
        let mut p = pool();
        let o = u.handle(
            &request("INVITE", 1, None, SDP),
            &flow(),
            Now::system(),
            &mut p,
            &|u| u == "src",
        );
        let [MediaAction::Start { streams, meta, .. }] = &o.actions[..] else {
            panic!()
        };
        assert_eq!(streams[0].role, super::super::offer::Role::Agent);
        assert_eq!(meta.agent.as_deref(), Some("src"));
    }

    #[test]
    fn refusals_change_nothing() {
        let mut u = uas(1);
        let mut p = pool();
        let now = Now::system();
        // Malformed SDP: 400, no dialog, no port kept.
        let o = send(
            &mut u,
            &mut p,
            &request("INVITE", 1, None, "v=0\r\nm=audio x\r\n"),
            now,
        );
        assert_eq!(status(&o), 400);
        // No codec we record: 488.
        let g729 = SDP.replace("RTP/AVP 0 101", "RTP/AVP 18");
        let o = send(&mut u, &mut p, &request("INVITE", 1, None, &g729), now);
        assert_eq!(status(&o), 488);
        // No body: 488 (offerless INVITE).
        let o = send(&mut u, &mut p, &request("INVITE", 1, None, ""), now);
        assert_eq!(status(&o), 488);
        assert_eq!(u.active(), 0);
        assert!(p.out.is_empty());
        // Capacity: the second concurrent recording gets 503.
        assert_eq!(
            status(&send(&mut u, &mut p, &request("INVITE", 1, None, SDP), now)),
            200
        );
        let mut other = request("INVITE", 1, None, SDP);
        other.headers.set(HeaderName::CallId, "call-2");
        assert_eq!(status(&send(&mut u, &mut p, &other, now)), 503);
        // Unknown dialog: BYE and re-INVITE are 481.
        let mut bye = request("BYE", 5, Some("zz"), "");
        bye.headers.set(HeaderName::CallId, "nope");
        assert_eq!(status(&send(&mut u, &mut p, &bye, now)), 481);
        let mut re = request("INVITE", 5, Some("zz"), SDP);
        re.headers.set(HeaderName::CallId, "nope");
        assert_eq!(status(&send(&mut u, &mut p, &re, now)), 481);
    }

    #[test]
    fn reinvite_keeps_ports_and_record_id() {
        let mut u = uas(10);
        let mut p = pool();
        let now = Now::system();
        let o = send(&mut u, &mut p, &request("INVITE", 1, None, SDP), now);
        let reply = o.reply.unwrap();
        let id = header_of(&reply, "X-Recording-Id").unwrap();
        let tag = to_tag(&reply);
        let pcma = SDP.replace("RTP/AVP 0 101", "RTP/AVP 8 101");
        let o = send(
            &mut u,
            &mut p,
            &request("INVITE", 2, Some(&tag), &pcma),
            now,
        );
        assert_eq!(status(&o), 200);
        let r2 = o.reply.unwrap();
        assert_eq!(header_of(&r2, "X-Recording-Id").unwrap(), id);
        let body = String::from_utf8_lossy(&r2);
        assert!(body.contains("m=audio 40002 RTP/AVP 8"), "{body}");
        assert!(body.contains(" 2 IN IP4"), "version bumped: {body}");
        let [MediaAction::Update { streams, .. }] = &o.actions[..] else {
            panic!()
        };
        assert_eq!(streams[0].codec, crate::media::codec::Codec::Pcma);
        assert_eq!(p.out, vec![40_002]);
    }

    #[test]
    fn cancel_after_the_answer_gets_200_and_unanswered_2xx_is_retransmitted_then_given_up() {
        let mut u = uas(10);
        let mut p = pool();
        let now = Now::system();
        let inv = request("INVITE", 1, None, SDP);
        let o = send(&mut u, &mut p, &inv, now);
        let ok = o.reply.unwrap();
        // CANCEL carries the INVITE's branch and CSeq number.
        let mut cancel = request("CANCEL", 1, None, "");
        cancel.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1-INVITE;rport",
        );
        assert_eq!(status(&send(&mut u, &mut p, &cancel, now)), 200);
        // Unrelated CANCEL: 481.
        let mut stray = cancel.clone();
        stray.headers.set(HeaderName::CallId, "zzz");
        assert_eq!(status(&send(&mut u, &mut p, &stray, now)), 481);

        // No ACK: 2xx at 0.5 s, 1.5 s, 3.5 s ..., then given up at 32 s with a BYE.
        let mut sent = 0;
        let mut stopped = false;
        for ms in (100..33_000).step_by(100) {
            let (out, actions) = u.poll(now.instant + Duration::from_millis(ms), &mut p);
            for o in &out {
                if o.bytes == ok {
                    sent += 1;
                } else {
                    assert!(String::from_utf8_lossy(&o.bytes)
                        .starts_with("BYE sip:src@127.0.0.1:5080 SIP/2.0"));
                }
            }
            if actions.iter().any(|a| {
                matches!(
                    a,
                    MediaAction::Stop {
                        reason: EndReason::NoAck,
                        ..
                    }
                )
            }) {
                stopped = true;
            }
        }
        assert!((7..=11).contains(&sent), "{sent} retransmissions");
        assert!(stopped);
        assert_eq!(u.active(), 0);
        assert!(p.out.is_empty());
    }

    #[test]
    fn ack_stops_retransmissions_and_rtp_timeout_sends_bye() {
        let mut u = uas(10);
        let mut p = pool();
        let now = Now::system();
        let o = send(&mut u, &mut p, &request("INVITE", 1, None, SDP), now);
        let reply = o.reply.unwrap();
        let tag = to_tag(&reply);
        let [MediaAction::Start { record_id, .. }] = &o.actions[..] else {
            panic!()
        };
        send(&mut u, &mut p, &request("ACK", 1, Some(&tag), ""), now);
        let (out, _) = u.poll(now.instant + Duration::from_secs(5), &mut p);
        assert!(out.is_empty());
        let bye = u.end(record_id, &mut p).expect("BYE over UDP");
        let text = String::from_utf8_lossy(&bye.bytes).into_owned();
        assert!(text.contains("Call-ID: call-1"), "{text}");
        assert!(text.contains(&format!("tag={tag}")), "{text}");
        assert_eq!(bye.to, flow().source);
        assert_eq!(u.active(), 0);
    }

    #[test]
    fn other_users_and_methods_are_not_claimed() {
        let u = uas(10);
        let mut r = request("INVITE", 1, None, SDP);
        r.uri = "sip:1001@127.0.0.1".into();
        assert!(!u.claims(&r));
        let mut reg = request("INVITE", 1, None, "");
        reg.method = Method::Register;
        assert!(!u.claims(&reg));
    }

    // ---- found in review ----
    const SDP2: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\na=sendonly\r\nm=audio 7002 RTP/AVP 0\r\na=sendonly\r\n";

    fn to_tag(reply: &[u8]) -> String {
        NameAddr::parse(&header_of(reply, "To").unwrap())
            .unwrap()
            .tag()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_reinvite_that_drops_m_lines_returns_their_ports() {
        let mut u = uas(10);
        let mut p = pool();
        let now = Now::system();
        let o = send(&mut u, &mut p, &request("INVITE", 1, None, SDP2), now);
        assert_eq!(status(&o), 200);
        assert_eq!(p.out.len(), 2);
        let tag = to_tag(&o.reply.unwrap());
        // The SRC drops the second stream by leaving its m= line out (not RFC 3264, but seen).
        let o = send(&mut u, &mut p, &request("INVITE", 2, Some(&tag), SDP), now);
        assert_eq!(status(&o), 200);
        let o = send(&mut u, &mut p, &request("BYE", 3, Some(&tag), ""), now);
        assert_eq!(status(&o), 200);
        assert_eq!(u.active(), 0);
        assert!(
            p.out.is_empty(),
            "ports still marked in use after BYE: {:?}",
            p.out
        );
    }

    #[test]
    fn a_reinvite_keeps_each_stream_on_its_side() {
        let mut u = uas(10);
        let mut p = pool();
        let now = Now::system();
        let o = u.handle(
            &request("INVITE", 1, None, SDP),
            &flow(),
            now,
            &mut p,
            &|u| u == "src",
        );
        let [MediaAction::Start { streams, .. }] = &o.actions[..] else {
            panic!()
        };
        assert_eq!(streams[0].role, super::super::offer::Role::Agent);
        let tag = to_tag(&o.reply.unwrap());
        let pcma = SDP.replace("RTP/AVP 0 101", "RTP/AVP 8 101");
        let o = u.handle(
            &request("INVITE", 2, Some(&tag), &pcma),
            &flow(),
            now,
            &mut p,
            &|u| u == "src",
        );
        let [MediaAction::Update { streams, .. }] = &o.actions[..] else {
            panic!()
        };
        assert_eq!(
            streams[0].role,
            super::super::offer::Role::Agent,
            "re-INVITE moved the agent's stream to the customer side"
        );
    }

    #[test]
    fn a_wildcard_listener_advertises_the_media_address() {
        let mut u = uas(10);
        let mut p = pool();
        let mut f = flow();
        f.local = "0.0.0.0:5060".parse().unwrap();
        let o = u.handle(
            &request("INVITE", 1, None, SDP),
            &f,
            Now::system(),
            &mut p,
            &|_| false,
        );
        let c = header_of(&o.reply.unwrap(), "Contact").unwrap();
        assert!(!c.contains("0.0.0.0"), "unroutable Contact: {c}");
    }

    #[test]
    fn an_invite_retransmission_after_the_bye_starts_nothing() {
        // UDP: the INVITE retransmission that crossed our 200 arrives after a quick BYE.
        let mut u = uas(10);
        let mut p = pool();
        let now = Now::system();
        let inv = request("INVITE", 1, None, SDP);
        let o = send(&mut u, &mut p, &inv, now);
        let tag = to_tag(&o.reply.unwrap());
        send(&mut u, &mut p, &request("BYE", 2, Some(&tag), ""), now);
        let o = send(&mut u, &mut p, &inv, now);
        assert!(
            o.actions.is_empty(),
            "a stale retransmission started {:?}",
            o.actions
        );
    }
}
