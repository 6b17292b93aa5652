//! The FreeSWITCH adapter's consumer loop: takes what the ESL client delivers and routes it.
//!
//! - channel events → [`ChannelTracker`] → `CallEvent`s → presence (ringing, talking, hold,
//!   after-call work);
//! - `CHANNEL_HANGUP_COMPLETE` → the CDR service as the leg's ESL description;
//! - `CUSTOM sofia::register|unregister|expire` → compared with the registrar's own view
//!   (gridedge is the registrar; FreeSWITCH seeing something else means a phone also
//!   registers elsewhere, or a stale binding), counted and logged, never acted upon;
//! - a (re)connect's `show channels` rows → [`ChannelTracker::resync`].

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
use crate::events::CallEvent;
use crate::metrics::Metrics;
use crate::sip::server::SipServer;

pub struct SwitchAdapter {
    pub agents: Arc<AgentsService>,
    pub cdr: Arc<CdrService>,
    pub sip: Arc<SipServer>,
    pub metrics: Arc<Metrics>,
    pub tracker: ChannelTracker,
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
        let events = self.tracker.on_event(&ev, now.unix_ms);
        self.deliver(events, now);
        match ev.name() {
            Some("CHANNEL_HANGUP_COMPLETE") => {
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
                    // gridedge owns presence; mod_callcenter's view is for the log.
                    tracing::debug!(action = q.action(), event = ?q, "callcenter event");
                }
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
