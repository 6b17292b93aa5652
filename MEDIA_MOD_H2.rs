// Lines helper H2 needs in src/media/mod.rs (codec is H1's):
pub mod sdp;
pub mod siprec;
// and in src/lib.rs:  pub mod media;
