//! Prometheus metrics, all named `gridedge_*`, in one registry served at `/metrics`.
//!
//! Handles for label combinations on the hot path are resolved once and cached, so counting a
//! request is an atomic add rather than a label hash.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub sip_requests: IntCounterVec,
    pub sip_dropped: IntCounterVec,
    pub sip_retransmissions: IntCounter,
    pub sip_bindings_active: IntGauge,
    pub sip_aors_registered: IntGauge,
    pub sip_auth_failures: IntCounter,
    pub sip_guard_bans: IntCounterVec,
    pub sip_guard_banned: IntGaugeVec,
    pub sip_registration_changes: IntCounterVec,
    pub sip_connections_active: IntGaugeVec,
    pub sip_connections_refused: IntCounterVec,
    pub store_persist_batches: IntCounter,
    pub store_persist_rows: IntCounter,
    pub store_persist_errors: IntCounter,
    pub ready: IntGauge,
    pub agents: IntGaugeVec,
    pub agent_transitions: IntCounterVec,
    pub projects: IntGauge,
    pub directory_extensions: IntGauge,
    pub api_requests: IntCounterVec,
    pub stream_connections: IntGauge,
    pub stream_messages: IntCounterVec,
    pub stream_refused: IntCounterVec,
    pub esl_connected: IntGauge,
    pub esl_connects: IntCounterVec,
    pub esl_events: IntCounterVec,
    pub esl_events_dropped: IntCounter,
    pub esl_resyncs: IntCounterVec,
    pub cdr_legs: IntCounterVec,
    pub cdrs_built: IntCounterVec,
    pub cdr_reconciliation: IntCounterVec,
    pub cdr_calls_pending: IntGauge,
    pub esl_registration_checks: IntCounterVec,
    request_cache: Mutex<HashMap<String, HashMap<u16, IntCounter>>>,
}

pub(crate) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

pub(crate) fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric name");
    g
}

pub(crate) fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

pub(crate) fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric name");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let build = gauge_vec(
            &r,
            "gridedge_build_info",
            "Build information; the value is always 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            sip_requests: counter_vec(
                &r,
                "gridedge_sip_requests_total",
                "SIP requests answered, by method and response status.",
                &["method", "status"],
            ),
            sip_dropped: counter_vec(
                &r,
                "gridedge_sip_dropped_total",
                "Inbound SIP messages dropped without an answer, by reason.",
                &["reason"],
            ),
            sip_retransmissions: counter(
                &r,
                "gridedge_sip_retransmissions_absorbed_total",
                "Retransmitted requests answered from the transaction cache without reprocessing.",
            ),
            sip_bindings_active: gauge(
                &r,
                "gridedge_sip_bindings_active",
                "Registered contact bindings.",
            ),
            sip_aors_registered: gauge(
                &r,
                "gridedge_sip_aors_registered",
                "Addresses-of-record with at least one binding.",
            ),
            sip_auth_failures: counter(
                &r,
                "gridedge_sip_auth_failures_total",
                "Digest authentication failures (wrong password, unknown user, replay).",
            ),
            sip_guard_bans: counter_vec(
                &r,
                "gridedge_sip_guard_bans_total",
                "Bans imposed by the guard, by kind (ip or user).",
                &["kind"],
            ),
            sip_guard_banned: gauge_vec(
                &r,
                "gridedge_sip_guard_banned",
                "Bans currently in force, by kind.",
                &["kind"],
            ),
            sip_registration_changes: counter_vec(
                &r,
                "gridedge_sip_registration_changes_total",
                "Binding changes, by kind.",
                &["change"],
            ),
            sip_connections_active: gauge_vec(
                &r,
                "gridedge_sip_connections_active",
                "Open SIP stream connections, by transport.",
                &["transport"],
            ),
            sip_connections_refused: counter_vec(
                &r,
                "gridedge_sip_connections_refused_total",
                "Stream connections refused or closed for cause, by reason.",
                &["reason"],
            ),
            store_persist_batches: counter(
                &r,
                "gridedge_store_persist_batches_total",
                "Write-behind batches committed to the store.",
            ),
            store_persist_rows: counter(
                &r,
                "gridedge_store_persist_rows_total",
                "Binding rows written or deleted by write-behind.",
            ),
            store_persist_errors: counter(
                &r,
                "gridedge_store_persist_errors_total",
                "Write-behind batches that failed (retried).",
            ),
            ready: gauge(
                &r,
                "gridedge_ready",
                "1 once every listener is bound and the store is open.",
            ),
            agents: gauge_vec(
                &r,
                "gridedge_agents",
                "Agent seats by presence state.",
                &["state"],
            ),
            agent_transitions: counter_vec(
                &r,
                "gridedge_agent_transitions_total",
                "Agent state transitions, by state left and state entered.",
                &["from", "to"],
            ),
            projects: gauge(&r, "gridedge_projects", "Active projects in the directory."),
            directory_extensions: gauge(
                &r,
                "gridedge_directory_extensions",
                "Extensions allocated to projects.",
            ),
            api_requests: counter_vec(
                &r,
                "gridedge_api_requests_total",
                "Management API requests, by route and result (ok or the error kind).",
                &["route", "result"],
            ),
            stream_connections: gauge(
                &r,
                "gridedge_stream_connections",
                "Open event-stream (WebSocket/STOMP) connections.",
            ),
            stream_messages: counter_vec(
                &r,
                "gridedge_stream_messages_total",
                "Event-stream messages, by direction (in, out) and kind.",
                &["direction", "kind"],
            ),
            stream_refused: counter_vec(
                &r,
                "gridedge_stream_refused_total",
                "Event-stream connections or frames refused, by reason.",
                &["reason"],
            ),
            esl_connected: gauge(
                &r,
                "gridedge_esl_connected",
                "1 while the FreeSWITCH event socket is authenticated and subscribed, else 0.",
            ),
            esl_connects: counter_vec(
                &r,
                "gridedge_esl_connects_total",
                "Event-socket connection attempts, by result (ok, refused, auth_failed, timeout, error).",
                &["result"],
            ),
            esl_events: counter_vec(
                &r,
                "gridedge_esl_events_total",
                "Event-socket events received, by event name (CUSTOM events by subclass).",
                &["event"],
            ),
            esl_events_dropped: counter(
                &r,
                "gridedge_esl_events_dropped_total",
                "Event-socket events dropped because the consumer queue was full.",
            ),
            esl_resyncs: counter_vec(
                &r,
                "gridedge_esl_resyncs_total",
                "Channel resyncs (show channels) after a (re)connect or an overflow, by result.",
                &["result"],
            ),
            cdr_legs: counter_vec(
                &r,
                "gridedge_cdr_legs_total",
                "Call legs ingested, by source (esl, post, sweeper) and result (stored, duplicate, refused).",
                &["source", "result"],
            ),
            cdrs_built: counter_vec(
                &r,
                "gridedge_cdrs_built_total",
                "Grid call records built, by segment type (queue, ivr, agent).",
                &["segment"],
            ),
            cdr_reconciliation: counter_vec(
                &r,
                "gridedge_cdr_reconciliation_total",
                "Calls closed by the CDR reconciler, by outcome (both, json_only, esl_only, late_leg).",
                &["outcome"],
            ),
            cdr_calls_pending: gauge(
                &r,
                "gridedge_cdr_calls_pending",
                "Calls with legs stored but no call record built yet.",
            ),
            esl_registration_checks: counter_vec(
                &r,
                "gridedge_esl_registration_checks_total",
                "FreeSWITCH sofia::register/unregister/expire events compared with the registrar's own view, by result (agree, disagree, unknown_user).",
                &["result"],
            ),
            request_cache: Mutex::new(HashMap::new()),
            registry: r,
        }
    }

    /// Counts one answered request. The (method, status) handle is cached after first use.
    pub fn count_request(&self, method: &str, status: u16) {
        let mut cache = self.request_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache
            .get(method)
            .and_then(|by_status| by_status.get(&status))
        {
            c.inc();
            return;
        }
        // Past a few dozen series, unknown methods fold into one label so a scanner inventing
        // method names cannot grow the series set without bound.
        let label = if cache.len() >= 32 { "other" } else { method };
        let c = self
            .sip_requests
            .with_label_values(&[label, &status.to_string()]);
        c.inc();
        cache.entry(label.to_owned()).or_default().insert(status, c);
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_named_metrics_and_counts() {
        let m = Metrics::new();
        m.count_request("REGISTER", 200);
        m.count_request("REGISTER", 200);
        m.count_request("REGISTER", 401);
        let text = m.render();
        assert!(
            text.contains("gridedge_sip_requests_total{method=\"REGISTER\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("gridedge_sip_requests_total{method=\"REGISTER\",status=\"401\"} 1"));
        assert!(text.contains("gridedge_build_info"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("gridedge_"), "{line}");
        }
    }
}
