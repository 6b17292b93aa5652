pub mod cli;
pub mod crypto;
pub mod download;
pub mod retention;
pub mod store;
pub mod transcode;
