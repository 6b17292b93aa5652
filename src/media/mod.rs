//! LOCAL STUB module list for helper H2's worktree; see MEDIA_MOD_H2.rs for the lines to merge.

pub mod codec;
pub mod sdp;
pub mod siprec;
