//! The `stead` binary as a library: the command line ([`cli`]) and the
//! benchmark scenarios behind `stead bench` ([`bench`]). The binary itself
//! is `src/main.rs`; everything it runs lives in the crates below this one
//! (see ARCHITECTURE.md for the map).

pub mod bench;
pub mod cli;
