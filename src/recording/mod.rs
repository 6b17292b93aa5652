//! The recording server: SIP UAS for recording URIs (plain and SIPREC), the media threads
//! that write stereo WAVs, and what happens after the call (transcode, encrypt, index, serve,
//! expire).
//!
//! - `uas` (sans-IO SIP dialogs) and `offer` (SDP/SIPREC → streams and sides) decide;
//!   `service` is their shell, plugged into the SIP server as a `SipApplication`.
//! - `ports` binds RTP/RTCP pairs; `capture` runs the epoll + recvmmsg media threads over
//!   `media::recorder`.
//! - `transcode` (bounded worker pool), `crypto` (AES-256-GCM chunked files), `store`
//!   (migration 8: the index), `download` (the grid's 录音下载 with ranges), `retention`,
//!   `cli` (`gridedge transcode`).

pub mod capture;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod download;
pub mod metrics;
pub mod offer;
pub mod ports;
pub mod retention;
pub mod service;
pub mod store;
pub mod transcode;
pub mod uas;

pub use cli::{run_transcode, TranscodeArgs};
pub use crypto::{Key, Keyring};
pub use download::StoredRecordings;
pub use store::{RecordingMeta, RecordingStatus, RecordingStore, StoredFile, StoredRecording};
pub use transcode::{
    Format, RecordingStored, SubmitError, TranscodeConfig, TranscodeError, TranscodeJob,
    TranscodeMetrics, TranscodeOutcome, TranscodePool,
};
