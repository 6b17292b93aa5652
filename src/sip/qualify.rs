//! OPTIONS qualify of UDP contacts (Kamailio's nathelper keep-alive, with teeth): every
//! `interval` each UDP binding is sent an OPTIONS on its flow; a binding that leaves
//! `max_failures` of them unanswered in a row is removed, so presence stops showing a phone
//! that has gone away without unregistering.
//!
//! Sans-IO: the shell calls [`Qualifier::poll`] about once a second with `now`, sends what it
//! returns, and feeds every response in through [`Qualifier::on_response`].

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::sip::location::{Location, Transport};
use crate::sip::message::{HeaderName, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QualifyConfig {
    /// Seconds between probes of one binding; 0 disables qualify.
    pub interval_secs: u64,
    /// Seconds to wait for an answer before counting a failure.
    pub timeout_secs: u64,
    /// Consecutive unanswered probes that remove the binding.
    pub max_failures: u32,
    /// Bound on probes in flight.
    pub max_outstanding: usize,
}

/// An OPTIONS to send from the listener at `local` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub bytes: Vec<u8>,
    pub local: SocketAddr,
    pub to: SocketAddr,
}

#[derive(Debug)]
struct Outstanding {
    aor: String,
    contact: String,
    sent_at: u64,
    /// Where the probe went: only an answer from there counts.
    to: SocketAddr,
}

#[derive(Debug, Default)]
struct State {
    last_probe: u64,
    failures: u32,
    in_flight: bool,
}

#[derive(Debug)]
pub struct Qualifier {
    cfg: QualifyConfig,
    seq: u64,
    /// Call-ID → the probe it belongs to.
    outstanding: HashMap<String, Outstanding>,
    state: HashMap<(String, String), State>,
}

impl Qualifier {
    pub fn new(cfg: QualifyConfig) -> Self {
        Self {
            cfg,
            seq: 0,
            outstanding: HashMap::new(),
            state: HashMap::new(),
        }
    }

    pub fn set_config(&mut self, cfg: QualifyConfig) {
        self.cfg = cfg;
    }

    pub fn enabled(&self) -> bool {
        self.cfg.interval_secs > 0
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Times out unanswered probes and returns new ones to send, plus the bindings that have now
    /// failed `max_failures` times and must be removed.
    pub fn poll(
        &mut self,
        location: &Location,
        now_unix: u64,
    ) -> (Vec<Probe>, Vec<(String, String)>) {
        let mut dead = Vec::new();
        if !self.enabled() {
            self.outstanding.clear();
            self.state.clear();
            return (Vec::new(), dead);
        }
        let timeout = self.cfg.timeout_secs;
        let mut timed_out = Vec::new();
        self.outstanding.retain(|_, o| {
            if now_unix >= o.sent_at + timeout {
                timed_out.push((o.aor.clone(), o.contact.clone()));
                false
            } else {
                true
            }
        });
        for key in timed_out {
            let st = self.state.entry(key.clone()).or_default();
            st.in_flight = false;
            st.failures += 1;
            if st.failures >= self.cfg.max_failures {
                self.state.remove(&key);
                dead.push(key);
            }
        }
        // Forget state of bindings that no longer exist.
        self.state.retain(|(aor, contact), _| {
            location
                .bindings(aor, now_unix)
                .any(|b| &b.contact == contact)
        });

        let mut probes = Vec::new();
        for (aor, b) in location.iter() {
            if b.flow.transport != Transport::Udp || b.expires_at <= now_unix {
                continue;
            }
            if self.outstanding.len() >= self.cfg.max_outstanding {
                break;
            }
            let key = (aor.to_owned(), b.contact.clone());
            if dead.contains(&key) {
                continue;
            }
            let st = self.state.entry(key.clone()).or_default();
            if st.in_flight
                || (st.last_probe != 0 && now_unix < st.last_probe + self.cfg.interval_secs)
            {
                continue;
            }
            st.last_probe = now_unix;
            st.in_flight = true;
            self.seq += 1;
            let call_id = format!("qualify-{:016x}-{}", rand::random::<u64>(), self.seq);
            probes.push(Probe {
                bytes: options_request(&b.contact, &call_id, b.flow.local, self.seq),
                local: b.flow.local,
                to: b.flow.source,
            });
            self.outstanding.insert(
                call_id,
                Outstanding {
                    aor: key.0,
                    contact: key.1,
                    sent_at: now_unix,
                    to: b.flow.source,
                },
            );
        }
        (probes, dead)
    }

    /// Any final response to our OPTIONS, even 405 or 404, proves the phone is there, provided
    /// it comes from where the probe went (a spoofer must not keep a dead binding alive).
    pub fn on_response(&mut self, resp: &Response, from: SocketAddr) -> bool {
        if resp.code < 200 {
            return false;
        }
        let Some(call_id) = resp.headers.get(&HeaderName::CallId) else {
            return false;
        };
        if self.outstanding.get(call_id).is_none_or(|o| o.to != from) {
            return false;
        }
        let Some(o) = self.outstanding.remove(call_id) else {
            return false;
        };
        if let Some(st) = self.state.get_mut(&(o.aor, o.contact)) {
            st.failures = 0;
            st.in_flight = false;
        }
        true
    }
}

fn options_request(contact: &str, call_id: &str, local: SocketAddr, seq: u64) -> Vec<u8> {
    format!(
        "OPTIONS {contact} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-q{seq:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:gridedge@{local}>;tag=q{seq:x}\r\n\
         To: <{contact}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::location::{Binding, ContactUpdate, Flow};
    use crate::sip::message::{Limits, Message};

    fn location_with(transport: Transport) -> Location {
        let mut loc = Location::new();
        let b = Binding {
            contact: "sip:1001@10.0.0.9:5062".into(),
            instance: None,
            reg_id: None,
            q: None,
            call_id: "c".into(),
            cseq: 1,
            branch_hash: 1,
            expires_at: 0,
            flow: Flow {
                transport,
                source: "203.0.113.5:40000".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                connection: None,
            },
            path: vec![],
            user_agent: None,
            registered_at: 0,
        };
        loc.apply(
            "1001",
            &[ContactUpdate {
                binding: b,
                expires: 3600,
            }],
            10,
            1000,
            &mut Default::default(),
        )
        .unwrap();
        loc
    }

    fn cfg() -> QualifyConfig {
        QualifyConfig {
            interval_secs: 30,
            timeout_secs: 5,
            max_failures: 2,
            max_outstanding: 100,
        }
    }

    fn answer(probe: &Probe) -> Response {
        let Ok(Message::Request(req)) = Message::parse(&probe.bytes, &Limits::default()) else {
            panic!("our OPTIONS must parse");
        };
        Response::reply_to(&req, 200, "OK")
    }

    #[test]
    fn probes_udp_bindings_on_their_flow_at_the_interval() {
        let loc = location_with(Transport::Udp);
        let mut q = Qualifier::new(cfg());
        let (p, dead) = q.poll(&loc, 1001);
        assert!(dead.is_empty());
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].to,
            "203.0.113.5:40000".parse().unwrap(),
            "sent to the NAT binding"
        );
        assert!(p[0]
            .bytes
            .starts_with(b"OPTIONS sip:1001@10.0.0.9:5062 SIP/2.0\r\n"));
        assert!(q.on_response(&answer(&p[0]), p[0].to));
        assert!(q.poll(&loc, 1010).0.is_empty(), "not before the interval");
        assert_eq!(q.poll(&loc, 1031).0.len(), 1);
    }

    #[test]
    fn unanswered_probes_remove_the_binding_after_max_failures() {
        let loc = location_with(Transport::Udp);
        let mut q = Qualifier::new(cfg());
        assert_eq!(q.poll(&loc, 1001).0.len(), 1);
        let (_, dead) = q.poll(&loc, 1006);
        assert!(dead.is_empty(), "one failure is tolerated");
        let (p, _) = q.poll(&loc, 1031);
        assert_eq!(p.len(), 1);
        let (_, dead) = q.poll(&loc, 1036);
        assert_eq!(
            dead,
            vec![("1001".to_string(), "sip:1001@10.0.0.9:5062".to_string())]
        );
    }

    #[test]
    fn an_answer_resets_the_failure_count_and_strangers_are_ignored() {
        let loc = location_with(Transport::Udp);
        let mut q = Qualifier::new(cfg());
        q.poll(&loc, 1001);
        q.poll(&loc, 1006); // one failure
        let (p, _) = q.poll(&loc, 1031);
        assert!(q.on_response(&answer(&p[0]), p[0].to));
        assert!(
            !q.on_response(&answer(&p[0]), p[0].to),
            "a duplicate answer matches nothing"
        );
        let (p, _) = q.poll(&loc, 1061);
        assert_eq!(p.len(), 1);
        let (_, dead) = q.poll(&loc, 1066);
        assert!(dead.is_empty(), "the count restarted after the answer");
    }

    #[test]
    fn an_answer_from_elsewhere_does_not_count() {
        let loc = location_with(Transport::Udp);
        let mut q = Qualifier::new(cfg());
        let (p, _) = q.poll(&loc, 1001);
        assert!(!q.on_response(&answer(&p[0]), "198.51.100.66:5060".parse().unwrap()));
        assert!(q.on_response(&answer(&p[0]), p[0].to));
    }

    #[test]
    fn stream_bindings_and_disabled_config_are_not_probed() {
        let loc = location_with(Transport::Tcp);
        assert!(Qualifier::new(cfg()).poll(&loc, 1001).0.is_empty());
        let loc = location_with(Transport::Udp);
        let mut off = Qualifier::new(QualifyConfig {
            interval_secs: 0,
            ..cfg()
        });
        assert!(off.poll(&loc, 1001).0.is_empty());
    }
}
