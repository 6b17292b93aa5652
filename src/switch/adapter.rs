//! The FreeSWITCH adapter's consumer loop: takes what the ESL client delivers and routes it.
//!
//! - channel events → [`ChannelTracker`] → `CallEvent`s → presence (ringing, talking, hold,
//!   after-call work);
//! - `CHANNEL_HANGUP_COMPLETE` → the CDR service as the leg's ESL description;
//! - channel answer, bridge and hang-up events → the dialer, which keeps those of its own
//!   calls (matched by the origination UUID it chose);
//! - `CUSTOM sofia::register|unregister|expire` → compared with the registrar's own view
//!   (gridedge is the registrar; FreeSWITCH seeing something else means a phone also
//!   registers elsewhere, or a stale binding), counted and logged, never acted upon;
//! - a (re)connect's `show channels` rows → [`ChannelTracker::resync`];
//! - `callcenter::info` `member-queue-start`/`-end` (and a member's answer or hang-up) → the
//!   grid's board of queued calls ([`SharedQueueBoard`], read by 查询通话排队列表).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::callcenter::{QueueEvent, SofiaRegistration};
use super::calls::ChannelTracker;
use super::client::SwitchFeed;
use super::esl::EslEvent;
use crate::agents::service::AgentsService;
use crate::cdr::service::CdrService;
use crate::clock::Now;
use crate::dialer::service::{DialerFeed, DialerService};
use crate::events::CallEvent;
use crate::grid::queue_board::SharedQueueBoard;
use crate::metrics::Metrics;
use crate::sip::server::SipServer;

pub struct SwitchAdapter {
    pub agents: Arc<AgentsService>,
    pub cdr: Arc<CdrService>,
    pub sip: Arc<SipServer>,
    pub metrics: Arc<Metrics>,
    pub tracker: ChannelTracker,
    pub queue_board: Arc<SharedQueueBoard>,
    /// The dialer, and the queue of channel events that may concern its calls.
    pub dialer: Option<(Arc<DialerService>, mpsc::Sender<DialerFeed>)>,
}

impl SwitchAdapter {
    pub async fn run(mut self, mut feed: mpsc::Receiver<SwitchFeed>, shutdown: CancellationToken) {
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = feed.recv() => item,
            };
            let Some(item) = item else { return };
            let now = Now::system();
            match item {
                SwitchFeed::Connected {
                    generation,
                    channels,
                } => {
                    if let Some(rows) = channels {
                        // Members whose channel is gone left the queue while we were away.
                        let live: std::collections::HashSet<String> =
                            rows.iter().filter_map(|r| r.get("uuid").cloned()).collect();
                        self.queue_board.retain_live(&live);
                        if let Some((dialer, tx)) = &self.dialer {
                            let feed = DialerFeed::Live {
                                uuids: live.clone(),
                                since_ms: now.unix_ms,
                            };
                            if tx.try_send(feed).is_err() {
                                dialer.event_dropped();
                            }
                        }
                        let events = self.tracker.resync(&rows, now.unix_ms);
                        tracing::info!(
                            generation,
                            channels = rows.len(),
                            presence_updates = events.len(),
                            "FreeSWITCH channels resynced"
                        );
                        self.deliver(events, now);
                    }
                }
                SwitchFeed::Disconnected { generation, reason } => {
                    tracing::warn!(generation, reason, "FreeSWITCH event socket disconnected");
                }
                SwitchFeed::Event(ev) => self.on_event(ev, now).await,
            }
        }
    }

    async fn on_event(&mut self, ev: EslEvent, now: Now) {
        if let Some((dialer, tx)) = &self.dialer {
            if DialerService::wants_event(&ev)
                && tx.try_send(DialerFeed::Event(ev.clone())).is_err()
            {
                dialer.event_dropped();
            }
        }
        let events = self.tracker.on_event(&ev, now.unix_ms);
        self.deliver(events, now);
        match ev.name() {
            Some("CHANNEL_HANGUP_COMPLETE") => {
                // A queued caller who hangs up may leave no member-queue-end behind (an ESL
                // event dropped under load): the hang-up settles it.
                if let Some(uuid) = ev.get("Unique-ID") {
                    self.queue_board.channel_gone(uuid);
                }
                let cdr = Arc::clone(&self.cdr);
                let r =
                    tokio::task::spawn_blocking(move || cdr.ingest_hangup_event(&ev, now.unix_ms))
                        .await;
                match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "hang-up event not usable as a call leg")
                    }
                    Err(e) => tracing::error!(error = %e, "CDR ingest task failed"),
                }
            }
            Some("CUSTOM") => {
                if let Some(reg) = SofiaRegistration::from_event(&ev) {
                    self.check_registration(&reg, now);
                } else if let Some(q) = QueueEvent::from_event(&ev) {
                    // gridedge owns presence; mod_callcenter's view is for the log, and its
                    // member events for the grid's queue list.
                    tracing::debug!(action = q.action(), event = ?q, "callcenter event");
                    self.on_queue_event(&q, &ev, now);
                }
            }
            _ => {}
        }
    }

    /// Feeds the queue board. `member-queue-start` carries the member channel's data
    /// (mod_callcenter fires it with `switch_channel_event_set_data`), so the number dialled is
    /// `Caller-Destination-Number`, and the join time the event's own timestamp (µs), capped
    /// at now like every switch time.
    fn on_queue_event(&self, q: &QueueEvent, ev: &EslEvent, now: Now) {
        match q {
            QueueEvent::MemberJoined {
                queue,
                member_session,
                caller_number,
            } => {
                let callee = ev.get("Caller-Destination-Number").unwrap_or("").trim();
                let joined_ms = ev
                    .get("Event-Date-Timestamp")
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .map_or(now.unix_ms, |us| (us / 1000).min(now.unix_ms));
                self.queue_board.update(|b| {
                    b.member_joined(member_session, queue, caller_number, callee, joined_ms)
                });
            }
            QueueEvent::MemberLeft { member_session, .. }
            | QueueEvent::BridgeStart { member_session, .. } => {
                self.queue_board.update(|b| b.member_left(member_session));
            }
            _ => {}
        }
    }

    fn deliver(&self, events: Vec<CallEvent>, now: Now) {
        for mut e in events {
            // Event times come from the switch's clock. One running ahead of ours would put
            // the agent's timers (after-call work) in our future, so it is capped at now.
            e.at_ms = e.at_ms.min(now.unix_ms);
            // Phones that are not agent seats are tracked but have no presence.
            if let Err(err) = self.agents.call_event(&e) {
                tracing::debug!(extension = %e.extension, error = %err, "call event not applied");
            }
        }
    }

    fn check_registration(&self, reg: &SofiaRegistration, now: Now) {
        let user = reg.user.as_str();
        let ours = self.sip.with_endpoint(|ep| {
            let known = ep.registrar.credentials().get(user).is_some();
            known.then(|| ep.registrar.location().is_online(user, now.unix_secs()))
        });
        let result = match ours {
            None => "unknown_user",
            Some(o) if o == reg.registered => "agree",
            Some(o) => {
                tracing::info!(
                    user,
                    freeswitch = reg.registered,
                    gridedge = o,
                    "FreeSWITCH's registration view differs from the registrar's"
                );
                "disagree"
            }
        };
        self.metrics
            .esl_registration_checks
            .with_label_values(&[result])
            .inc();
    }
}
