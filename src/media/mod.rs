//! Media path for call recording: RTP parsing, jitter/reorder buffering, decoders to the
//! 8 kHz recording timeline, resampling, WAV files, the two-channel recorder, and what the
//! recording server reads from an INVITE (SDP offers, SIPREC bodies).

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod g722;
pub mod jitter;
pub mod opus;
pub mod recorder;
pub mod resample;
pub mod rtp;
pub mod sdp;
pub mod siprec;
pub mod wav;
