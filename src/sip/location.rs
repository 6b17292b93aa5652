//! The location service: address-of-record → bindings, with expiry and flow tracking.
//!
//! Sans-IO: every mutation takes the current time and reports what changed, so the shell can
//! persist it (write-behind) and publish [`RegistrationChanged`] events.
//!
//! Architecture invariant: a binding whose flow is a stream connection lives exactly as long as
//! that connection; [`Location::connection_closed`] removes it (Kamailio's `handle_lost_tcp`).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::events::{RegistrationChange, RegistrationChanged};

/// The transport a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    pub fn parse(s: &str) -> Option<Transport> {
        Some(match s {
            "udp" => Self::Udp,
            "tcp" => Self::Tcp,
            "tls" => Self::Tls,
            "ws" => Self::Ws,
            "wss" => Self::Wss,
            _ => return None,
        })
    }

    /// Stream transports have connections whose loss ends the bindings made over them.
    pub fn is_stream(self) -> bool {
        !matches!(self, Self::Udp)
    }
}

/// Identifies one accepted stream connection for the lifetime of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// Where a request came from: enough to send anything back the same way (RFC 5626 flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub source: SocketAddr,
    /// The local listener address that received it.
    pub local: SocketAddr,
    /// Set for stream transports.
    pub connection: Option<ConnectionId>,
}

/// One registered contact of an address-of-record.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The Contact URI as the phone sent it (without header parameters).
    pub contact: String,
    /// RFC 5626 `+sip.instance` and `reg-id`: together they identify a flow that a new
    /// registration replaces even when the Contact URI changed.
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub q: Option<f32>,
    pub call_id: String,
    pub cseq: u32,
    /// A hash of the top Via branch of the request that last wrote this binding, to tell a
    /// retransmission (same CSeq, same branch) from an out-of-order request.
    pub branch_hash: u64,
    /// Absolute expiry, Unix seconds.
    pub expires_at: u64,
    pub flow: Flow,
    /// RFC 3327 Path headers, echoed in the 200 and used for routing to the contact.
    pub path: Vec<String>,
    pub user_agent: Option<String>,
    pub registered_at: u64,
}

impl Binding {
    pub fn remaining_secs(&self, now_unix: u64) -> u64 {
        self.expires_at.saturating_sub(now_unix)
    }
}

/// A change the shell writes behind to the store.
///
/// Nearly every queued change is an upsert, so boxing the binding would add an allocation to
/// the REGISTER path without saving memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Persist {
    Upsert { aor: String, binding: Binding },
    Delete { aor: String, contact: String },
}

/// Everything one location mutation produced.
#[derive(Debug, Default)]
pub struct Changes {
    pub events: Vec<RegistrationChanged>,
    pub persist: Vec<Persist>,
}

impl Changes {
    /// Moves everything from `other` into `self`, keeping order.
    pub fn append(&mut self, mut other: Changes) {
        self.events.append(&mut other.events);
        self.persist.append(&mut other.persist);
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.persist.is_empty()
    }

    fn record(&mut self, aor: &str, b: &Binding, change: RegistrationChange, online: bool) {
        let removed = !matches!(
            change,
            RegistrationChange::Added | RegistrationChange::Refreshed
        );
        self.events.push(RegistrationChanged {
            aor: aor.to_owned(),
            contact: b.contact.clone(),
            change,
            online,
            transport: b.flow.transport,
            source: b.flow.source,
            expires_at: if removed { 0 } else { b.expires_at },
            user_agent: b.user_agent.clone(),
        });
        self.persist.push(if removed {
            Persist::Delete {
                aor: aor.to_owned(),
                contact: b.contact.clone(),
            }
        } else {
            Persist::Upsert {
                aor: aor.to_owned(),
                binding: b.clone(),
            }
        });
    }
}

/// The in-memory binding table.
#[derive(Debug, Default)]
pub struct Location {
    aors: HashMap<String, Vec<Binding>>,
    /// Stream connection → AoRs with a binding over it, so a closed connection is O(its bindings).
    by_connection: HashMap<ConnectionId, Vec<String>>,
    count: usize,
}

impl Location {
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bindings across all AoRs.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn aor_count(&self) -> usize {
        self.aors.len()
    }

    /// Current, unexpired bindings of an AoR.
    pub fn bindings<'a>(
        &'a self,
        aor: &str,
        now_unix: u64,
    ) -> impl Iterator<Item = &'a Binding> + 'a {
        self.aors
            .get(aor)
            .into_iter()
            .flatten()
            .filter(move |b| b.expires_at > now_unix)
    }

    pub fn is_online(&self, aor: &str, now_unix: u64) -> bool {
        self.bindings(aor, now_unix).next().is_some()
    }

    /// Applies one REGISTER's contact updates atomically: either every update applies or none
    /// does (RFC 3261 §10.3 steps 6-7). Bindings that had already expired are removed first
    /// and reported in `changes` even when the update itself is refused.
    ///
    /// When the AoR would exceed `max_contacts`, bindings this request does not mention are
    /// evicted, soonest-expiring first (a phone whose NAT rebinding changed its Contact leaves
    /// such strays behind; refusing it would lock the phone out until they expire).
    pub fn apply(
        &mut self,
        aor: &str,
        updates: &[ContactUpdate],
        max_contacts: usize,
        now_unix: u64,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        self.expire_aor(aor, now_unix, changes);
        let current = self.aors.get(aor).map(Vec::as_slice).unwrap_or(&[]);

        // Plan everything on a copy before touching anything.
        let mut planned: Vec<Binding> = current.to_vec();
        // Indices into `planned` written by this request, with the kind of change.
        let mut outcome: Vec<(usize, RegistrationChange)> = Vec::new();
        let mut removed: Vec<(Binding, RegistrationChange)> = Vec::new();
        for u in updates {
            let existing = planned
                .iter()
                .position(|b| b.contact == u.binding.contact)
                // The same URI written differently (host case, parameter order, escapes) is
                // the same binding (RFC 3261 §10.3 step 7 compares per §19.1.4). Only tried
                // when no byte-identical contact exists, so refreshes never pay for it.
                .or_else(|| {
                    planned
                        .iter()
                        .position(|b| equivalent_uris(&b.contact, &u.binding.contact))
                })
                .or_else(|| {
                    // RFC 5626 §6: same instance and reg-id means the same flow, new contact or not.
                    u.binding.instance.as_ref().and_then(|inst| {
                        planned.iter().position(|b| {
                            b.instance.as_ref() == Some(inst)
                                && b.reg_id.is_some()
                                && b.reg_id == u.binding.reg_id
                        })
                    })
                });
            match existing {
                Some(i) => {
                    let old = &planned[i];
                    if old.call_id == u.binding.call_id && u.binding.cseq <= old.cseq {
                        if u.binding.cseq == old.cseq && u.binding.branch_hash == old.branch_hash {
                            // A retransmission of the request that wrote this binding: the
                            // answer is the current state, unchanged.
                            continue;
                        }
                        return Err(ApplyError::OutOfOrder);
                    }
                    if u.expires == 0 {
                        let b = planned.remove(i);
                        shift_after_remove(&mut outcome, i);
                        removed.push((b, RegistrationChange::Unregistered));
                    } else {
                        let same_uri = planned[i].contact == u.binding.contact
                            || equivalent_uris(&planned[i].contact, &u.binding.contact);
                        // A different URI found through +sip.instance/reg-id replaces the old one.
                        let replaced = !same_uri;
                        if replaced {
                            removed.push((planned[i].clone(), RegistrationChange::Replaced));
                        }
                        let registered_at = if replaced {
                            now_unix
                        } else {
                            planned[i].registered_at
                        };
                        // An equivalent URI keeps the spelling already stored, so the binding
                        // (and its row in the store) keeps one identity.
                        let contact = if same_uri {
                            planned[i].contact.clone()
                        } else {
                            u.binding.contact.clone()
                        };
                        planned[i] = Binding {
                            expires_at: now_unix + u64::from(u.expires),
                            registered_at,
                            contact,
                            ..u.binding.clone()
                        };
                        let kind = if replaced {
                            RegistrationChange::Added
                        } else {
                            RegistrationChange::Refreshed
                        };
                        outcome.retain(|(j, _)| *j != i);
                        outcome.push((i, kind));
                    }
                }
                None if u.expires == 0 => {}
                None => {
                    planned.push(Binding {
                        expires_at: now_unix + u64::from(u.expires),
                        registered_at: now_unix,
                        ..u.binding.clone()
                    });
                    outcome.push((planned.len() - 1, RegistrationChange::Added));
                }
            }
        }
        while planned.len() > max_contacts {
            let victim = (0..planned.len())
                .filter(|i| !outcome.iter().any(|(j, _)| j == i))
                .min_by_key(|&i| planned[i].expires_at);
            let Some(i) = victim else {
                // This request alone carries more contacts than allowed.
                return Err(ApplyError::TooManyContacts);
            };
            let b = planned.remove(i);
            shift_after_remove(&mut outcome, i);
            removed.push((b, RegistrationChange::Replaced));
        }

        let online = !planned.is_empty();
        for (b, kind) in &removed {
            changes.record(aor, b, *kind, online);
        }
        for (i, kind) in outcome {
            changes.record(aor, &planned[i], kind, online);
        }
        self.replace_aor(aor, planned);
        Ok(())
    }

    /// `Contact: *` with `Expires: 0`: removes every binding, subject to the Call-ID/CSeq rule.
    pub fn remove_all(
        &mut self,
        aor: &str,
        call_id: &str,
        cseq: u32,
        now_unix: u64,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        self.expire_aor(aor, now_unix, changes);
        let current = self.aors.get(aor).map(Vec::as_slice).unwrap_or(&[]);
        if current
            .iter()
            .any(|b| b.call_id == call_id && cseq <= b.cseq)
        {
            return Err(ApplyError::OutOfOrder);
        }
        let gone = self.take_aor(aor);
        for b in &gone {
            changes.record(aor, b, RegistrationChange::Unregistered, false);
        }
        Ok(())
    }

    /// Removes every binding of an AoR for an administrative reason (extension disabled).
    pub fn remove_aor(&mut self, aor: &str, change: RegistrationChange) -> Changes {
        let mut changes = Changes::default();
        for b in &self.take_aor(aor) {
            changes.record(aor, b, change, false);
        }
        changes
    }

    /// Removes one binding (qualify failure).
    pub fn remove_contact(
        &mut self,
        aor: &str,
        contact: &str,
        change: RegistrationChange,
    ) -> Changes {
        let mut changes = Changes::default();
        let Some(list) = self.aors.get(aor) else {
            return changes;
        };
        let mut planned = list.clone();
        let Some(i) = planned.iter().position(|b| b.contact == contact) else {
            return changes;
        };
        let b = planned.remove(i);
        changes.record(aor, &b, change, !planned.is_empty());
        self.replace_aor(aor, planned);
        changes
    }

    /// A stream connection closed: its bindings go with it.
    pub fn connection_closed(&mut self, conn: ConnectionId) -> Changes {
        let mut changes = Changes::default();
        let Some(aors) = self.by_connection.get(&conn).cloned() else {
            return changes;
        };
        for aor in aors {
            let Some(list) = self.aors.get(&aor) else {
                continue;
            };
            let (gone, kept): (Vec<Binding>, Vec<Binding>) = list
                .iter()
                .cloned()
                .partition(|b| b.flow.connection == Some(conn));
            let online = !kept.is_empty();
            for b in &gone {
                changes.record(&aor, b, RegistrationChange::ConnectionClosed, online);
            }
            self.replace_aor(&aor, kept);
        }
        self.by_connection.remove(&conn);
        changes
    }

    /// Whether any binding still uses this connection (such a connection must be kept open).
    pub fn connection_in_use(&self, conn: ConnectionId) -> bool {
        self.by_connection.contains_key(&conn)
    }

    /// Removes every expired binding. Called by the shell's sweeper about once a second.
    pub fn sweep(&mut self, now_unix: u64) -> Changes {
        let mut changes = Changes::default();
        let expired: Vec<String> = self
            .aors
            .iter()
            .filter(|(_, list)| list.iter().any(|b| b.expires_at <= now_unix))
            .map(|(aor, _)| aor.clone())
            .collect();
        for aor in expired {
            self.expire_aor(&aor, now_unix, &mut changes);
        }
        changes
    }

    /// Restores persisted bindings at start-up. Stream bindings are not restored: their
    /// connection died with the previous process, so they could never be reached.
    pub fn restore(&mut self, aor: String, binding: Binding, now_unix: u64) -> bool {
        if binding.expires_at <= now_unix || binding.flow.transport.is_stream() {
            return false;
        }
        let list = self.aors.entry(aor).or_default();
        if list.iter().any(|b| b.contact == binding.contact) {
            return false;
        }
        list.reserve_exact(1);
        list.push(binding);
        self.count += 1;
        true
    }

    /// Every binding, for the qualify task and diagnostics.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Binding)> {
        self.aors
            .iter()
            .flat_map(|(aor, list)| list.iter().map(move |b| (aor.as_str(), b)))
    }

    /// Removes the AoR's expired bindings, recording them in `changes`.
    pub fn expire_aor(&mut self, aor: &str, now_unix: u64, changes: &mut Changes) {
        let Some(list) = self.aors.get(aor) else {
            return;
        };
        if list.iter().all(|b| b.expires_at > now_unix) {
            return;
        }
        let (gone, kept): (Vec<Binding>, Vec<Binding>) =
            list.iter().cloned().partition(|b| b.expires_at <= now_unix);
        let online = !kept.is_empty();
        for b in &gone {
            changes.record(aor, b, RegistrationChange::Expired, online);
        }
        self.replace_aor(aor, kept);
    }

    fn take_aor(&mut self, aor: &str) -> Vec<Binding> {
        let gone = self.aors.get(aor).cloned().unwrap_or_default();
        self.replace_aor(aor, Vec::new());
        gone
    }

    /// The single place where an AoR's bindings change: keeps the count and the
    /// connection index exactly in step with the list.
    fn replace_aor(&mut self, aor: &str, mut planned: Vec<Binding>) {
        // A Vec grown by push holds room for four bindings; most AoRs have one, and at 100k
        // phones the slack would triple the table's memory.
        planned.shrink_to_fit();
        let old_conns: Vec<ConnectionId> = self
            .aors
            .get(aor)
            .map(|l| l.iter().filter_map(|b| b.flow.connection).collect())
            .unwrap_or_default();
        let new_conns: Vec<ConnectionId> =
            planned.iter().filter_map(|b| b.flow.connection).collect();
        for c in old_conns.iter().filter(|c| !new_conns.contains(c)) {
            if let Some(aors) = self.by_connection.get_mut(c) {
                aors.retain(|a| a != aor);
                if aors.is_empty() {
                    self.by_connection.remove(c);
                }
            }
        }
        for c in new_conns.iter().filter(|c| !old_conns.contains(c)) {
            let aors = self.by_connection.entry(*c).or_default();
            if !aors.iter().any(|a| a == aor) {
                aors.push(aor.to_owned());
            }
        }
        let old = self.aors.get(aor).map_or(0, Vec::len);
        self.count = self.count - old + planned.len();
        if planned.is_empty() {
            self.aors.remove(aor);
        } else if let Some(list) = self.aors.get_mut(aor) {
            *list = planned;
        } else {
            self.aors.insert(aor.to_owned(), planned);
        }
    }
}

fn equivalent_uris(a: &str, b: &str) -> bool {
    use crate::sip::header::SipUri;
    matches!((SipUri::parse(a), SipUri::parse(b)), (Ok(x), Ok(y)) if x.same_address(&y))
}

/// Keeps `outcome` indices pointing at the same bindings after `planned.remove(i)`.
fn shift_after_remove(outcome: &mut Vec<(usize, RegistrationChange)>, i: usize) {
    outcome.retain_mut(|(j, _)| {
        if *j == i {
            return false;
        }
        if *j > i {
            *j -= 1;
        }
        true
    });
}

/// One Contact of a REGISTER, after expiry resolution.
#[derive(Debug, Clone)]
pub struct ContactUpdate {
    /// The binding as it should be stored (`expires_at` and `registered_at` are filled in).
    pub binding: Binding,
    /// Granted lifetime in seconds; 0 removes.
    pub expires: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("Call-ID matches an existing binding but CSeq is not higher")]
    OutOfOrder,
    #[error("too many contacts for this address-of-record")]
    TooManyContacts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(
        loc: &mut Location,
        aor: &str,
        updates: &[ContactUpdate],
        max: usize,
        now: u64,
    ) -> Result<Changes, ApplyError> {
        let mut c = Changes::default();
        loc.apply(aor, updates, max, now, &mut c).map(|()| c)
    }

    fn remove_all(
        loc: &mut Location,
        aor: &str,
        call_id: &str,
        cseq: u32,
        now: u64,
    ) -> Result<Changes, ApplyError> {
        let mut c = Changes::default();
        loc.remove_all(aor, call_id, cseq, now, &mut c).map(|()| c)
    }

    fn flow(conn: Option<u64>) -> Flow {
        Flow {
            transport: if conn.is_some() {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            connection: conn.map(ConnectionId),
        }
    }

    fn upd(contact: &str, call_id: &str, cseq: u32, expires: u32) -> ContactUpdate {
        ContactUpdate {
            binding: Binding {
                contact: contact.into(),
                instance: None,
                reg_id: None,
                q: None,
                call_id: call_id.into(),
                cseq,
                branch_hash: u64::from(cseq),
                expires_at: 0,
                flow: flow(None),
                path: vec![],
                user_agent: None,
                registered_at: 0,
            },
            expires,
        }
    }

    #[test]
    fn add_refresh_remove() {
        let mut loc = Location::new();
        let c = apply(&mut loc, "1001", &[upd("sip:a@h", "c1", 1, 60)], 10, 1000).unwrap();
        assert_eq!(c.events[0].change, RegistrationChange::Added);
        assert!(c.events[0].online);
        assert_eq!(loc.len(), 1);
        let c = apply(&mut loc, "1001", &[upd("sip:a@h", "c1", 2, 120)], 10, 1010).unwrap();
        assert_eq!(c.events[0].change, RegistrationChange::Refreshed);
        assert_eq!(loc.bindings("1001", 1010).next().unwrap().expires_at, 1130);
        let c = apply(&mut loc, "1001", &[upd("sip:a@h", "c1", 3, 0)], 10, 1020).unwrap();
        assert_eq!(c.events[0].change, RegistrationChange::Unregistered);
        assert!(!c.events[0].online);
        assert!(loc.is_empty());
        assert_eq!(loc.aor_count(), 0);
    }

    #[test]
    fn out_of_order_cseq_changes_nothing() {
        let mut loc = Location::new();
        apply(&mut loc, "1001", &[upd("sip:a@h", "c1", 5, 60)], 10, 1000).unwrap();
        let mut older = upd("sip:a@h", "c1", 4, 60);
        older.binding.branch_hash = 99;
        assert_eq!(
            apply(&mut loc, "1001", &[older], 10, 1001).unwrap_err(),
            ApplyError::OutOfOrder
        );
        let mut same_other_branch = upd("sip:a@h", "c1", 5, 0);
        same_other_branch.binding.branch_hash = 77;
        assert_eq!(
            apply(&mut loc, "1001", &[same_other_branch], 10, 1001).unwrap_err(),
            ApplyError::OutOfOrder
        );
        assert_eq!(loc.bindings("1001", 1001).next().unwrap().cseq, 5);
        // A different Call-ID may take over regardless of CSeq.
        apply(&mut loc, "1001", &[upd("sip:a@h", "c2", 1, 60)], 10, 1002).unwrap();
        assert_eq!(loc.bindings("1001", 1002).next().unwrap().call_id, "c2");
    }

    #[test]
    fn retransmission_is_idempotent() {
        let mut loc = Location::new();
        apply(&mut loc, "1001", &[upd("sip:a@h", "c1", 5, 60)], 10, 1000).unwrap();
        let c = apply(&mut loc, "1001", &[upd("sip:a@h", "c1", 5, 60)], 10, 1001).unwrap();
        assert!(c.is_empty());
        assert_eq!(loc.bindings("1001", 1001).next().unwrap().expires_at, 1060);
    }

    #[test]
    fn over_the_limit_evicts_strays_but_refuses_an_oversized_request() {
        let mut loc = Location::new();
        apply(&mut loc, "1001", &[upd("sip:old@h", "c0", 1, 30)], 2, 1000).unwrap();
        apply(&mut loc, "1001", &[upd("sip:a@h", "c1", 1, 60)], 2, 1000).unwrap();
        // A third contact: the soonest-expiring one this request does not mention goes.
        let c = apply(&mut loc, "1001", &[upd("sip:b@h", "c2", 1, 60)], 2, 1001).unwrap();
        let kinds: Vec<_> = c
            .events
            .iter()
            .map(|e| (e.contact.as_str(), e.change))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("sip:old@h", RegistrationChange::Replaced),
                ("sip:b@h", RegistrationChange::Added)
            ]
        );
        assert_eq!(loc.len(), 2);
        // One request with more contacts than allowed changes nothing.
        let err = apply(
            &mut loc,
            "1001",
            &[
                upd("sip:x@h", "c3", 1, 60),
                upd("sip:y@h", "c3", 1, 60),
                upd("sip:z@h", "c3", 1, 60),
            ],
            2,
            1002,
        )
        .unwrap_err();
        assert_eq!(err, ApplyError::TooManyContacts);
        assert_eq!(loc.len(), 2);
    }

    #[test]
    fn an_equivalent_contact_uri_is_the_same_binding() {
        let mut loc = Location::new();
        apply(
            &mut loc,
            "1001",
            &[upd(
                "sip:1001@PC.Example.com:5060;transport=udp;ob",
                "c1",
                1,
                60,
            )],
            10,
            1000,
        )
        .unwrap();
        // Same URI, host case and parameter order changed: a refresh, then a removal.
        let c = apply(
            &mut loc,
            "1001",
            &[upd(
                "sip:1001@pc.example.com:5060;ob;transport=udp",
                "c1",
                2,
                60,
            )],
            10,
            1001,
        )
        .unwrap();
        assert_eq!(c.events[0].change, RegistrationChange::Refreshed);
        assert_eq!(loc.len(), 1);
        apply(
            &mut loc,
            "1001",
            &[upd(
                "sip:1001@pc.example.com:5060;transport=UDP;ob",
                "c1",
                3,
                0,
            )],
            10,
            1002,
        )
        .unwrap();
        assert!(loc.is_empty());
        // A different port is a different binding.
        apply(
            &mut loc,
            "1001",
            &[upd("sip:1001@h:5060", "c1", 4, 60)],
            10,
            1003,
        )
        .unwrap();
        apply(
            &mut loc,
            "1001",
            &[upd("sip:1001@h:5062", "c1", 5, 60)],
            10,
            1003,
        )
        .unwrap();
        assert_eq!(loc.len(), 2);
    }

    #[test]
    fn a_refresh_over_a_new_connection_moves_the_binding_to_it() {
        let mut loc = Location::new();
        let mut first = upd("sip:a@h;transport=tcp", "c1", 1, 600);
        first.binding.flow = flow(Some(1));
        apply(&mut loc, "1001", &[first], 10, 1000).unwrap();
        // The phone reconnects (new connection 2) and refreshes the same contact.
        let mut again = upd("sip:a@h;transport=tcp", "c1", 2, 600);
        again.binding.flow = flow(Some(2));
        apply(&mut loc, "1001", &[again], 10, 1010).unwrap();
        assert!(
            loc.connection_closed(ConnectionId(1)).is_empty(),
            "the old connection no longer owns it"
        );
        assert!(loc.connection_in_use(ConnectionId(2)));
        let c = loc.connection_closed(ConnectionId(2));
        assert_eq!(c.events.len(), 1, "closing the new connection removes it");
        assert!(loc.is_empty());
        assert!(!loc.connection_in_use(ConnectionId(2)));
    }

    #[test]
    fn expiry_found_during_a_refused_update_is_still_reported() {
        let mut loc = Location::new();
        apply(
            &mut loc,
            "1001",
            &[upd("sip:a@h", "c1", 5, 60), upd("sip:b@h", "c9", 1, 10)],
            10,
            1000,
        )
        .unwrap();
        let mut changes = Changes::default();
        let err = loc
            .apply(
                "1001",
                &[upd("sip:a@h", "c1", 4, 60)],
                10,
                1020,
                &mut changes,
            )
            .unwrap_err();
        assert_eq!(err, ApplyError::OutOfOrder);
        assert_eq!(changes.events.len(), 1);
        assert_eq!(changes.events[0].change, RegistrationChange::Expired);
        assert_eq!(loc.len(), 1);
    }

    #[test]
    fn instance_and_reg_id_replace_old_contact() {
        let mut loc = Location::new();
        let mut a = upd("sip:a@1.invalid", "c1", 1, 60);
        a.binding.instance = Some("<urn:uuid:1>".into());
        a.binding.reg_id = Some(1);
        apply(&mut loc, "1001", &[a], 10, 1000).unwrap();
        let mut b = upd("sip:b@2.invalid", "c9", 1, 60);
        b.binding.instance = Some("<urn:uuid:1>".into());
        b.binding.reg_id = Some(1);
        let c = apply(&mut loc, "1001", &[b], 10, 1001).unwrap();
        let kinds: Vec<_> = c.events.iter().map(|e| e.change).collect();
        assert_eq!(
            kinds,
            vec![RegistrationChange::Replaced, RegistrationChange::Added]
        );
        assert_eq!(loc.len(), 1);
        assert_eq!(
            loc.bindings("1001", 1001).next().unwrap().contact,
            "sip:b@2.invalid"
        );
    }

    #[test]
    fn expiry_sweep_and_connection_close() {
        let mut loc = Location::new();
        apply(&mut loc, "1001", &[upd("sip:a@h", "c1", 1, 60)], 10, 1000).unwrap();
        let mut t = upd("sip:t@h", "c2", 1, 600);
        t.binding.flow = flow(Some(7));
        apply(&mut loc, "1002", &[t], 10, 1000).unwrap();
        assert_eq!(loc.len(), 2);
        let c = loc.sweep(1060);
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.events[0].change, RegistrationChange::Expired);
        assert_eq!(loc.len(), 1);
        let c = loc.connection_closed(ConnectionId(7));
        assert_eq!(c.events[0].change, RegistrationChange::ConnectionClosed);
        assert!(loc.is_empty());
        assert!(loc.connection_closed(ConnectionId(7)).is_empty());
    }

    #[test]
    fn remove_all_respects_cseq() {
        let mut loc = Location::new();
        apply(
            &mut loc,
            "1001",
            &[upd("sip:a@h", "c1", 5, 60), upd("sip:b@h", "c1", 5, 60)],
            10,
            1000,
        )
        .unwrap();
        assert_eq!(
            remove_all(&mut loc, "1001", "c1", 5, 1001).unwrap_err(),
            ApplyError::OutOfOrder
        );
        assert_eq!(loc.len(), 2);
        let c = remove_all(&mut loc, "1001", "c1", 6, 1001).unwrap();
        assert_eq!(c.events.len(), 2);
        assert!(loc.is_empty());
    }

    #[test]
    fn restore_skips_expired_and_stream_bindings() {
        let mut loc = Location::new();
        let mut b = upd("sip:a@h", "c1", 1, 60).binding;
        b.expires_at = 2000;
        assert!(loc.restore("1001".into(), b.clone(), 1000));
        assert!(!loc.restore("1001".into(), b.clone(), 1000), "duplicate");
        b.contact = "sip:x@h".into();
        assert!(!loc.restore("1001".into(), b.clone(), 3000), "expired");
        b.flow = flow(Some(1));
        assert!(!loc.restore("1001".into(), b, 1000), "stream");
        assert_eq!(loc.len(), 1);
    }
}
