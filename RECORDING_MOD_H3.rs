// H3 (stored recordings) — lines for src/recording/mod.rs. lib.rs needs `pub mod recording;`
// (added in this branch's local-stub commit, next to a stub mod.rs holding only the
// `pub mod` lines below; replace that stub with the real mod.rs).

pub mod cli;
pub mod crypto;
pub mod download;
pub mod retention;
pub mod store;
pub mod transcode;

pub use cli::{run_transcode, TranscodeArgs};
pub use crypto::{Key, Keyring};
pub use download::StoredRecordings;
pub use store::{RecordingMeta, RecordingStatus, RecordingStore, StoredFile, StoredRecording};
pub use transcode::{
    Format, RecordingStored, SubmitError, TranscodeConfig, TranscodeError, TranscodeJob,
    TranscodeMetrics, TranscodeOutcome, TranscodePool,
};

// main.rs (integrator), in `enum Command`:
//     /// Convert a backlog of recordings (spool WAVs + JSON sidecars, or --add-format).
//     Transcode(gridedge::recording::TranscodeArgs),
// and in the match:
//     Command::Transcode(a) => gridedge::recording::run_transcode(a)  // anyhow::Result<()>
