//! `gridedge_recording_*`: the recording server's live metrics (media and SIP side). The
//! transcoding pool registers its own (`transcode.rs`).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Registry};

use crate::metrics::counter_vec;

pub struct RecordingMetrics {
    pub active: IntGauge,
    /// Packets by result: received, lost, reordered, late, duplicate, refused.
    pub packets: IntCounterVec,
    /// RFC 3550 interarrival jitter of each stream, observed when its recording ends.
    pub jitter_ms: Histogram,
    /// Recordings ended, by reason (bye, rtp_timeout, no_ack, shutdown) ...
    pub ended: IntCounterVec,
    /// ... and INVITEs refused, by status code.
    pub refused: IntCounterVec,
}

impl RecordingMetrics {
    pub fn new(r: &Registry) -> RecordingMetrics {
        let active = IntGauge::new(
            "gridedge_recording_active",
            "Recordings receiving media now.",
        )
        .expect("valid metric definition");
        r.register(Box::new(active.clone()))
            .expect("unique metric name");
        let jitter_ms = Histogram::with_opts(
            HistogramOpts::new(
                "gridedge_recording_jitter_ms",
                "Interarrival jitter (RFC 3550) of each recorded stream at its end, in milliseconds.",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]),
        )
        .expect("valid metric definition");
        r.register(Box::new(jitter_ms.clone()))
            .expect("unique metric name");
        RecordingMetrics {
            active,
            packets: counter_vec(
                r,
                "gridedge_recording_packets_total",
                "RTP packets of recordings by result: received, lost (never arrived), reordered, late (after their place was written), duplicate, refused (malformed or unknown payload type).",
                &["result"],
            ),
            jitter_ms,
            ended: counter_vec(
                r,
                "gridedge_recording_ended_total",
                "Recordings ended, by reason (bye, rtp_timeout, no_ack, shutdown).",
                &["reason"],
            ),
            refused: counter_vec(
                r,
                "gridedge_recording_invites_refused_total",
                "INVITEs to a recording URI refused, by status code.",
                &["status"],
            ),
        }
    }
}
