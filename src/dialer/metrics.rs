//! `gridedge_dialer_*`: the campaign runtime's metrics.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::metrics::{counter_vec, gauge_vec};

pub struct DialerMetrics {
    pub attempts: IntCounterVec,
    pub launches: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub tasks: IntGaugeVec,
    pub abandon_rate: GaugeVec,
    pub commands: IntCounterVec,
    pub events_dropped: IntCounter,
    pub store_errors: IntCounter,
}

impl DialerMetrics {
    pub fn new(r: &Registry) -> DialerMetrics {
        let abandon_rate = GaugeVec::new(
            Opts::new(
                "gridedge_dialer_abandon_rate",
                "Abandoned live answers over live answers, per task, over the rolling window (24h, 30d), from the compliance log.",
            ),
            &["task", "window"],
        )
        .expect("valid metric definition");
        r.register(Box::new(abandon_rate.clone()))
            .expect("unique metric name");
        let events_dropped = IntCounter::new(
            "gridedge_dialer_events_dropped_total",
            "Switch events not queued for the dialer (queue full); job results and the ring guard still end every call.",
        )
        .expect("valid metric definition");
        r.register(Box::new(events_dropped.clone()))
            .expect("unique metric name");
        let store_errors = IntCounter::new(
            "gridedge_dialer_store_errors_total",
            "Dialer writes that failed in the store (each is logged).",
        )
        .expect("valid metric definition");
        r.register(Box::new(store_errors.clone()))
            .expect("unique metric name");
        DialerMetrics {
            attempts: counter_vec(r, "gridedge_dialer_attempts_total", "Outbound attempts finished and logged, by task and outcome (connected, abandoned, no_answer, busy, failed, machine, suppressed).", &["task", "outcome"]),
            launches: counter_vec(r, "gridedge_dialer_launches_total", "Originates sent, by task.", &["task"]),
            in_flight: gauge_vec(r, "gridedge_dialer_calls_in_flight", "Calls launched and not yet ended, by task.", &["task"]),
            tasks: gauge_vec(r, "gridedge_dialer_tasks", "Call tasks by status (initialized, running, paused, ended).", &["status"]),
            abandon_rate,
            commands: counter_vec(r, "gridedge_dialer_commands_total", "bgapi commands sent by the dialer, by command and result (ok, err, lost).", &["command", "result"]),
            events_dropped,
            store_errors,
        }
    }
}
