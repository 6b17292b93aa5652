//! Non-INVITE server transactions, reduced to what a registrar needs over UDP: a retransmitted
//! request is answered with the response already sent, without being processed again
//! (RFC 3261 §17.2.2). This is what makes a lost 200 harmless: the phone retransmits its
//! authenticated REGISTER with the same nonce-count, and re-running digest verification would
//! call that a replay.
//!
//! Sans-IO, bounded twice: responses are kept for Timer J (64·T1 = 32 s) or until newer ones
//! push them out, by count and by total bytes, whichever bound is reached first.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::sip::message::{HeaderName, Request};

/// RFC 3261 Timer J for UDP.
pub const TIMER_J: Duration = Duration::from_secs(32);

/// Identifies a request and its retransmissions: the source address, the top Via (branch and
/// sent-by), Call-ID, CSeq and method, hashed under a per-process random key so nobody can
/// force collisions. The source is part of it so one client cannot plant an answer that
/// another client's request would then receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionKey(u64);

#[derive(Debug)]
struct Entry {
    response: Vec<u8>,
    status: u16,
}

#[derive(Debug)]
pub struct ResponseCache {
    hasher: std::hash::RandomState,
    entries: HashMap<TransactionKey, Entry>,
    /// Insertion order with expiry, for O(1) expiry and eviction.
    order: VecDeque<(Instant, TransactionKey)>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    ttl: Duration,
}

impl ResponseCache {
    pub fn new(capacity: usize, max_bytes: usize, ttl: Duration) -> Self {
        Self {
            hasher: std::hash::RandomState::new(),
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            ttl,
        }
    }

    /// The key of a request, or `None` for ACK (which never gets a response).
    pub fn key(&self, req: &Request, source: std::net::SocketAddr) -> Option<TransactionKey> {
        if req.method == crate::sip::message::Method::Ack {
            return None;
        }
        let via = req.headers.get(&HeaderName::Via)?;
        let call_id = req.headers.get(&HeaderName::CallId)?;
        let cseq = req.headers.get(&HeaderName::CSeq)?;
        Some(TransactionKey(self.hasher.hash_one((
            source,
            via,
            call_id,
            cseq,
            req.method.as_str(),
        ))))
    }

    /// The response already sent for this transaction, if it is still remembered.
    pub fn lookup(&mut self, key: TransactionKey, now: Instant) -> Option<(&[u8], u16)> {
        self.expire(now);
        self.entries
            .get(&key)
            .map(|e| (e.response.as_slice(), e.status))
    }

    /// Remembers the final response sent for a transaction.
    pub fn insert(&mut self, key: TransactionKey, response: &[u8], status: u16, now: Instant) {
        self.expire(now);
        if response.len() > self.max_bytes {
            return;
        }
        while self.entries.len() >= self.capacity || self.bytes + response.len() > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.forget(oldest);
        }
        let old = self.entries.insert(
            key,
            Entry {
                response: response.to_vec(),
                status,
            },
        );
        self.bytes += response.len();
        match old {
            Some(old) => self.bytes -= old.response.len(),
            None => self.order.push_back((now + self.ttl, key)),
        }
    }

    /// Bytes of responses held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn forget(&mut self, key: TransactionKey) {
        if let Some(e) = self.entries.remove(&key) {
            self.bytes -= e.response.len();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(expires, key)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            self.forget(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Limits, Message};

    const SRC: &str = "10.0.0.1:5060";

    fn req(branch: &str, cseq: u32) -> Request {
        let text = format!(
            "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:a@h>\r\nCall-ID: c1\r\nCSeq: {cseq} REGISTER\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(text.as_bytes(), &Limits::default()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn retransmission_hits_new_request_misses() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(10, 1 << 20, TIMER_J);
        let k = c.key(&req("z9hG4bK1", 2), SRC.parse().unwrap()).unwrap();
        assert!(c.lookup(k, t0).is_none());
        c.insert(k, b"SIP/2.0 200 OK\r\n", 200, t0);
        assert_eq!(
            c.key(&req("z9hG4bK1", 2), SRC.parse().unwrap()),
            Some(k),
            "same bytes, same key"
        );
        assert_eq!(
            c.lookup(k, t0 + Duration::from_secs(1)),
            Some((&b"SIP/2.0 200 OK\r\n"[..], 200))
        );
        assert_ne!(
            c.key(&req("z9hG4bK2", 2), SRC.parse().unwrap()),
            Some(k),
            "new branch"
        );
        assert_ne!(
            c.key(&req("z9hG4bK1", 3), SRC.parse().unwrap()),
            Some(k),
            "new CSeq"
        );
        assert_ne!(
            c.key(&req("z9hG4bK1", 2), "10.0.0.2:5060".parse().unwrap()),
            Some(k),
            "other source"
        );
    }

    #[test]
    fn entries_expire_after_timer_j_and_capacity_is_bounded() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(3, 1 << 20, TIMER_J);
        let keys: Vec<_> = (0..5)
            .map(|i| {
                c.key(&req(&format!("z9hG4bK{i}"), 1), SRC.parse().unwrap())
                    .unwrap()
            })
            .collect();
        for k in &keys {
            c.insert(*k, b"x", 200, t0);
        }
        assert_eq!(c.len(), 3);
        assert!(c.lookup(keys[0], t0).is_none(), "oldest evicted");
        assert!(c.lookup(keys[4], t0).is_some());
        assert!(c.lookup(keys[4], t0 + TIMER_J).is_none(), "expired");
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_byte_budget_evicts_oldest_and_refuses_giants() {
        let t0 = Instant::now();
        let mut c = ResponseCache::new(100, 1000, TIMER_J);
        let keys: Vec<_> = (0..4)
            .map(|i| {
                c.key(&req(&format!("z9hG4bK{i}"), 1), SRC.parse().unwrap())
                    .unwrap()
            })
            .collect();
        for k in &keys[..3] {
            c.insert(*k, &[b'x'; 400], 401, t0);
        }
        assert_eq!(
            c.len(),
            2,
            "three 400-byte answers do not fit in 1000 bytes"
        );
        assert!(c.bytes() <= 1000);
        assert!(c.lookup(keys[0], t0).is_none());
        c.insert(keys[3], &[b'x'; 1001], 200, t0);
        assert!(
            c.lookup(keys[3], t0).is_none(),
            "larger than the whole budget"
        );
    }
}
