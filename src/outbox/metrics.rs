//! `gridedge_outbox_*`: depth and age (is the receiver keeping up?), deliveries by result
//! (is it refusing?), dead letters (does someone need to look?) and push latency.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Registry};

use super::record::Target;
use crate::metrics::{counter_vec, gauge_vec};

pub struct OutboxMetrics {
    pub depth: IntGaugeVec,
    pub bytes: IntGaugeVec,
    pub oldest_age_seconds: IntGaugeVec,
    pub target_down: IntGaugeVec,
    pub enqueued: IntCounterVec,
    pub refused: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub retries: IntCounterVec,
    pub dead_letters: IntGaugeVec,
    pub dead_lettered: IntCounterVec,
    pub push_seconds: HistogramVec,
    pub delivery_seconds: HistogramVec,
    pub commit_batch: HistogramVec,
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric definition");
    r.register(Box::new(h.clone())).expect("unique metric name");
    h
}

impl OutboxMetrics {
    pub fn new(r: &Registry) -> OutboxMetrics {
        let m = OutboxMetrics {
            depth: gauge_vec(r, "gridedge_outbox_depth", "Records committed and not yet delivered or dead-lettered, by target.", &["target"]),
            bytes: gauge_vec(r, "gridedge_outbox_bytes", "Bytes held by pending records, by target (bounded by outbox.max_bytes).", &["target"]),
            oldest_age_seconds: gauge_vec(r, "gridedge_outbox_oldest_age_seconds", "Age of the oldest pending record, by target; 0 when none.", &["target"]),
            target_down: gauge_vec(r, "gridedge_outbox_target_down", "1 while a push target is considered down (only probes are sent).", &["target"]),
            enqueued: counter_vec(r, "gridedge_outbox_enqueued_total", "Records committed to the outbox, by target.", &["target"]),
            refused: counter_vec(r, "gridedge_outbox_refused_total", "Records refused because the outbox was full (back-pressure), by target.", &["target"]),
            deliveries: counter_vec(r, "gridedge_outbox_deliveries_total", "Delivery attempts by target and result (delivered, retry, dead).", &["target", "result"]),
            retries: counter_vec(r, "gridedge_outbox_retries_total", "Attempts rescheduled after a transient failure, by target.", &["target"]),
            dead_letters: gauge_vec(r, "gridedge_outbox_dead_letters", "Records in the dead-letter table, by target.", &["target"]),
            dead_lettered: counter_vec(r, "gridedge_outbox_dead_lettered_total", "Records moved to the dead-letter table, by target and why (rejected, exhausted, expired).", &["target", "reason"]),
            push_seconds: histogram(r, "gridedge_outbox_push_seconds", "Duration of one HTTP push attempt, by target.", &["target"], vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            delivery_seconds: histogram(r, "gridedge_outbox_delivery_seconds", "From commit to acknowledged delivery, by target.", &["target"], vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0]),
            commit_batch: histogram(r, "gridedge_outbox_commit_batch_records", "Records per group commit of the outbox writer.", &["kind"], vec![1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0]),
        };
        for t in Target::ALL {
            let l = [t.as_str()];
            m.depth.with_label_values(&l).set(0);
            m.oldest_age_seconds.with_label_values(&l).set(0);
            m.dead_letters.with_label_values(&l).set(0);
            m.enqueued.with_label_values(&l);
            m.refused.with_label_values(&l);
            m.retries.with_label_values(&l);
            for res in ["delivered", "retry", "dead"] {
                m.deliveries.with_label_values(&[t.as_str(), res]);
            }
        }
        m
    }
}
