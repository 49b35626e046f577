//! The stead host: runs entity components behind the `stead:entity` WIT
//! contract and owns everything stateful around them.
//!
//! Modules (see ARCHITECTURE.md for the map and its invariants):
//! - [`component`]: building guest crates into components and validating
//!   components against the contract.
//! - [`journal`]: the event journal trait, its sled backend and conformance suite.
//! - [`runtime`]: the wasmtime engine, deployments and guest instances.
//! - [`shards`]: routing, shard workers, activation, passivation, dedup.
//! - [`node`]: [`Node`], the library API the servers and tests drive.
//! - [`config`]: every tunable with its default.
//! - [`api`]: gRPC, HTTP/JSON and metrics over a [`Node`].
//! - [`cli`]: the `stead` command line (the binary is `src/main.rs`).
//! - [`bench`]: the benchmark scenarios behind `stead bench`.

pub mod api;
pub mod bench;
pub mod cli;
pub mod component;
pub mod config;
pub mod journal;
pub mod node;
pub mod runtime;
pub mod shards;

pub use config::NodeConfig;
pub use node::{CommandReply, Node, NodeError, PendingReply, TypeInfo};
