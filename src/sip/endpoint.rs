//! The SIP endpoint core: one inbound message in, at most one reply out.
//!
//! Sans-IO. Transports hand it raw bytes with their [`Flow`] and `now`; it applies the guard,
//! parses, dispatches by method (REGISTER to the registrar, OPTIONS answered here, everything
//! else refused with the right code) and returns the encoded reply plus what changed. Keeping
//! the whole decision here means every transport behaves identically and every rule is testable
//! without a socket.

use std::net::SocketAddr;

use crate::clock::Now;
use crate::sip::guard::{DropReason, Guard, Verdict};
use crate::sip::header::parse_vias;
use crate::sip::location::{Changes, Flow, Transport};
use crate::sip::message::{
    salvage_for_reply, HeaderName, Limits, Message, Method, ParseError, Request, Response,
};
use crate::sip::qualify::{Qualifier, QualifyConfig};
use crate::sip::registrar::{reply_with_tag, AuthNote, Registrar};
use crate::sip::transaction::{ResponseCache, TIMER_J};

/// Methods this daemon accepts today; the Allow header lists them.
pub const ALLOW: &str = "REGISTER, OPTIONS";

/// Why an inbound message got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    Guard(DropReason),
    /// Unparseable beyond the point where a reply could be addressed.
    Unanswerable,
    /// A response, or an ACK: nothing to answer.
    NoReplyExpected,
}

/// The result of handling one inbound message.
#[derive(Debug)]
pub struct Handled {
    /// Encoded reply and where to send it (on the same flow).
    pub reply: Option<(Vec<u8>, SocketAddr)>,
    pub silence: Option<Silence>,
    pub method: Option<Method>,
    pub status: Option<u16>,
    pub auth: AuthNote,
    /// The (user, source) pair was banned by this request's auth failure.
    pub user_banned: bool,
    /// The source IP was banned by this request (it crossed the flood threshold).
    pub ip_banned: bool,
    pub changes: Changes,
    /// A response received (for the qualify tracker).
    pub response: Option<Response>,
    /// The reply is the cached answer to a retransmitted request.
    pub retransmission: bool,
}

impl Handled {
    fn silent(reason: Silence) -> Handled {
        Handled {
            reply: None,
            silence: Some(reason),
            method: None,
            status: None,
            auth: AuthNote::None,
            user_banned: false,
            ip_banned: false,
            changes: Changes::default(),
            response: None,
            retransmission: false,
        }
    }
}

pub struct Endpoint {
    pub guard: Guard,
    pub registrar: Registrar,
    pub limits: Limits,
    pub qualify: Qualifier,
    /// Final responses sent over UDP, replayed to retransmissions.
    pub transactions: ResponseCache,
}

impl Endpoint {
    pub fn new(guard: Guard, registrar: Registrar, limits: Limits) -> Self {
        Self {
            guard,
            registrar,
            limits,
            qualify: Qualifier::new(QualifyConfig {
                interval_secs: 0,
                timeout_secs: 5,
                max_failures: 3,
                max_outstanding: 10_000,
            }),
            transactions: ResponseCache::new(16_384, 8 << 20, TIMER_J),
        }
    }

    /// Handles one datagram or one framed stream message.
    pub fn handle(&mut self, bytes: &[u8], flow: &Flow, now: Now) -> Handled {
        let parsed = Message::parse(bytes, &self.limits);
        self.handle_parsed(parsed, bytes, flow, now)
    }

    /// Like [`Endpoint::handle`] with the parse already done, so a shell can parse outside
    /// whatever lock guards the endpoint (parsing is the largest share of the work and needs
    /// no shared state).
    pub fn handle_parsed(
        &mut self,
        parsed: Result<Message, ParseError>,
        bytes: &[u8],
        flow: &Flow,
        now: Now,
    ) -> Handled {
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => return self.malformed(bytes, flow, now, &e.to_string()),
        };
        let req = match msg {
            Message::Request(r) => r,
            Message::Response(resp) => {
                self.qualify.on_response(&resp, flow.source);
                let mut h = Handled::silent(Silence::NoReplyExpected);
                h.status = Some(resp.code);
                h.response = Some(resp);
                return h;
            }
        };
        let ua = req.headers.get(&HeaderName::UserAgent);
        if let Verdict::Drop(reason) = self.guard.check_request(flow.source.ip(), ua, now.instant) {
            let mut h = Handled::silent(Silence::Guard(reason));
            h.method = Some(req.method.clone());
            h.ip_banned = reason == DropReason::Flood;
            return h;
        }
        // Only UDP retransmits (RFC 3261 §17.1.2.2); stream transports never repeat a request.
        // And only a REGISTER carrying credentials needs its answer replayed: re-verifying it
        // would look like a nonce-count replay, while anything else can simply be processed
        // again. Keeping the cache to those keeps unauthenticated floods out of its memory.
        let replay_sensitive = flow.transport == Transport::Udp
            && req.method == Method::Register
            && req.headers.contains(&HeaderName::Authorization);
        let key = replay_sensitive
            .then(|| self.transactions.key(&req, flow.source))
            .flatten();
        if let Some(key) = key {
            if let Some((bytes, status)) = self.transactions.lookup(key, now.instant) {
                let mut h = Handled::silent(Silence::NoReplyExpected);
                h.silence = None;
                h.method = Some(req.method.clone());
                h.status = Some(status);
                h.retransmission = true;
                h.reply = Some((bytes.to_vec(), flow.source));
                return h;
            }
        }
        let h = self.dispatch(req, flow, now);
        if let (Some(key), Some((bytes, _)), Some(status)) = (key, &h.reply, h.status) {
            if status >= 200 {
                self.transactions.insert(key, bytes, status, now.instant);
            }
        }
        h
    }

    fn dispatch(&mut self, req: Request, flow: &Flow, now: Now) -> Handled {
        let mut h = Handled::silent(Silence::NoReplyExpected);
        h.silence = None;
        h.method = Some(req.method.clone());
        let response = match req.method {
            Method::Register => {
                let ip = flow.source.ip();
                let guard = &self.guard;
                let out = self.registrar.handle_register(&req, flow, now, |user| {
                    guard.is_user_banned(user, ip, now.instant)
                });
                match &out.auth {
                    AuthNote::Failed(user, _) => {
                        h.user_banned = self.guard.record_auth_failure(user, ip, now.instant)
                    }
                    AuthNote::Authenticated(user) => self.guard.record_auth_success(user, ip),
                    _ => {}
                }
                h.auth = out.auth;
                h.changes = out.changes;
                let Some(response) = out.response else {
                    h.silence = Some(Silence::Guard(DropReason::Banned));
                    return h;
                };
                response
            }
            Method::Options => {
                // RFC 3261 §11.2: say what we can do. Also serves as a liveness probe.
                let mut r = reply_with_tag(&req, 200, "OK");
                r.headers.push(HeaderName::Allow, ALLOW);
                r.headers
                    .push(HeaderName::Other("Accept".into()), "application/sdp");
                r.headers.push(HeaderName::Supported, "outbound, path");
                r
            }
            // ACK has no response (RFC 3261 §17.2.1); with no INVITE transactions here, drop it.
            Method::Ack => {
                h.silence = Some(Silence::NoReplyExpected);
                return h;
            }
            // No transaction matches a CANCEL we could receive today.
            Method::Cancel => reply_with_tag(&req, 481, "Call/Transaction Does Not Exist"),
            Method::Other(_) => {
                let mut r = reply_with_tag(&req, 501, "Not Implemented");
                r.headers.push(HeaderName::Allow, ALLOW);
                r
            }
            _ => {
                let mut r = reply_with_tag(&req, 405, "Method Not Allowed");
                r.headers.push(HeaderName::Allow, ALLOW);
                r
            }
        };
        h.status = Some(response.code);
        h.reply = Some(self.encode(response, &req, flow));
        h
    }

    /// A request we could not fully parse: answer 400 if it can be addressed, else drop.
    fn malformed(&mut self, bytes: &[u8], flow: &Flow, now: Now, why: &str) -> Handled {
        let Some(req) = salvage_for_reply(bytes, &self.limits) else {
            return Handled::silent(Silence::Unanswerable);
        };
        // Malformed traffic still counts towards the flood limit.
        if let Verdict::Drop(reason) = self
            .guard
            .check_request(flow.source.ip(), None, now.instant)
        {
            let mut h = Handled::silent(Silence::Guard(reason));
            h.ip_banned = reason == DropReason::Flood;
            return h;
        }
        let mut h = Handled::silent(Silence::NoReplyExpected);
        h.silence = None;
        h.method = Some(req.method.clone());
        if req.method == Method::Ack {
            h.silence = Some(Silence::NoReplyExpected);
            return h;
        }
        // The reason phrase carries the parser's diagnosis, minus anything that could break the
        // status line.
        let reason: String = format!("Bad Request ({why})")
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        let resp = reply_with_tag(&req, 400, &reason);
        h.status = Some(400);
        h.reply = Some(self.encode(resp, &req, flow));
        h
    }

    /// Stamps the top Via and encodes; see [`encode_reply`].
    fn encode(&self, resp: Response, req: &Request, flow: &Flow) -> (Vec<u8>, SocketAddr) {
        (encode_reply(resp, req, flow), flow.source)
    }
}

/// Stamps `received`/`rport` on the top Via (RFC 3261 §18.2.1, RFC 3581) and encodes. Shared
/// by every SIP application of the daemon (registrar, recording server).
///
/// The reply always goes back to the packet's source address, as Kamailio's `force_rport()`
/// does: phones behind NAT are only reachable there, and answering anywhere else would let a
/// spoofed Via turn us into a reflector.
pub fn encode_reply(mut resp: Response, req: &Request, flow: &Flow) -> Vec<u8> {
    if let Some(top) = req.headers.get(&HeaderName::Via) {
        if let Ok(mut vias) = parse_vias(std::iter::once(top)) {
            if let Some(via) = vias.first_mut() {
                let src_ip = flow.source.ip().to_string();
                let sent_by = via.host.trim_start_matches('[').trim_end_matches(']');
                if sent_by != src_ip {
                    via.params.set("received", Some(&src_ip));
                }
                if via.params.contains("rport") {
                    via.params
                        .set("rport", Some(&flow.source.port().to_string()));
                }
                let first = via.to_string();
                // The first Via header value may hold several comma-joined Vias; only the
                // topmost one is ours to stamp.
                let rest: Vec<String> = vias[1..].iter().map(ToString::to_string).collect();
                let mut value = first;
                for r in rest {
                    value.push_str(", ");
                    value.push_str(&r);
                }
                replace_first(&mut resp, value);
            }
        }
    }
    let mut out = Vec::with_capacity(512);
    resp.write_to(&mut out);
    out
}

/// Replaces the first Via value in place, keeping every header where it was.
fn replace_first(resp: &mut Response, value: String) {
    let mut rebuilt = crate::sip::message::Headers::with_capacity(resp.headers.len());
    let mut value = Some(value);
    for (name, v) in resp.headers.iter() {
        match (name, value.take_if(|_| *name == HeaderName::Via)) {
            (_, Some(stamped)) => rebuilt.push(HeaderName::Via, stamped),
            (name, None) => rebuilt.push(name.clone(), v),
        }
    }
    resp.headers = rebuilt;
}
