//! `[dialer]`: the campaign runtime's timers, dial strings and bounds.

use serde::Deserialize;

use super::campaign::EngineConfig;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialerConfig {
    /// How often the runtime paces, connects and checks timers, besides on every call event.
    pub tick_ms: u64,
    /// Ring timeout of every originate (`originate_timeout`).
    pub ring_timeout_secs: u64,
    /// How long an answered person waits for an agent before the dialer hangs up. 2 s is the
    /// regulators' limit (predictive-dialing.md §3.1); a longer wait is an abandoned call
    /// anyway, so waiting longer only makes the customer's experience worse.
    pub drop_ms: u64,
    /// The abandon threshold: bridged later than this after the answer counts as abandoned.
    pub abandon_threshold_ms: u64,
    /// How long an agent chosen for a call is kept from other calls while FreeSWITCH rings it.
    pub reserve_ms: u64,
    /// The agent's dial string; `{ext}` is replaced by the extension.
    pub agent_dial_string: String,
    /// Time zone of tasks that do not name one (calling windows, `expiredTime`).
    pub timezone: String,
    /// Numbers a single import (or blacklist request) may carry.
    pub max_import: usize,

    /// Switch events queued for the runtime; beyond it events are dropped (and counted), the
    /// job results and the ring guard still end every call.
    pub event_queue: usize,
    /// A connected call longer than this is hung up (its hang-up event must have been lost).
    pub max_call_secs: u64,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            tick_ms: 200,
            ring_timeout_secs: 30,
            drop_ms: 2_000,
            abandon_threshold_ms: 2_000,
            reserve_ms: 10_000,
            agent_dial_string: "user/{ext}".into(),
            timezone: "Asia/Shanghai".into(),
            max_import: 100_000,

            event_queue: 4096,
            max_call_secs: 4 * 3600,
        }
    }
}

impl DialerConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = crate::config::check_range;
        range("dialer.tick_ms", self.tick_ms, 10, 1_000)?;
        range("dialer.ring_timeout_secs", self.ring_timeout_secs, 1, 300)?;
        range("dialer.drop_ms", self.drop_ms, 100, 60_000)?;
        range(
            "dialer.abandon_threshold_ms",
            self.abandon_threshold_ms,
            100,
            60_000,
        )?;
        range("dialer.reserve_ms", self.reserve_ms, 100, 120_000)?;
        range("dialer.max_import", self.max_import as u64, 1, 10_000_000)?;
        if self.reserve_ms < self.drop_ms {
            return Err((
                "dialer.reserve_ms",
                format!(
                    "must be at least dialer.drop_ms ({}): an agent must stay reserved while their phone rings",
                    self.drop_ms
                ),
            ));
        }
        range("dialer.event_queue", self.event_queue as u64, 16, 1_000_000)?;
        range("dialer.max_call_secs", self.max_call_secs, 60, 86_400)?;
        let d = &self.agent_dial_string;
        if !d.contains("{ext}") {
            return Err(("dialer.agent_dial_string", "must contain {ext}".into()));
        }
        // The string is spliced into `uuid_transfer ... bridge:<dial> inline`: a space, a
        // comma (the inline dialplan's separator) or a line break would change the command.
        if d.chars()
            .any(|c| c.is_whitespace() || c == ',' || c.is_control())
        {
            return Err((
                "dialer.agent_dial_string",
                "must not contain spaces, commas or control characters".into(),
            ));
        }
        crate::agents::counters::DayClock::new(&self.timezone)
            .map_err(|e| ("dialer.timezone", e.to_string()))?;
        Ok(())
    }

    /// The engine's settings; `wrap_ms` is presence's after-call work.
    pub fn engine(&self, wrap_ms: u64) -> EngineConfig {
        EngineConfig {
            ring_timeout_ms: self.ring_timeout_secs * 1000,
            ring_guard_ms: 15_000,
            drop_ms: self.drop_ms,
            abandon_threshold_ms: self.abandon_threshold_ms,
            reserve_ms: self.reserve_ms,
            wrap_ms,
            agent_dial_string: self.agent_dial_string.clone(),
            answer_grace_ms: 500,
            max_call_ms: self.max_call_secs * 1000,
        }
    }
}
