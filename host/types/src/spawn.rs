//! The task seam: where a node's long-running loops run (shard workers, the
//! lease keeper, the command-id sweeper, the deploy poller).
//!
//! Each loop is a future. In production the engine gives each one its own
//! OS thread with a small runtime of its own (a guest call or a durable
//! flush blocks only that loop, as a thread would); the simulator spawns
//! them as tasks of the simulated host, so a whole cluster runs on one
//! thread in a seeded order. The loops are the same code either way.
//!
//! Invariant: a loop never assumes which: it blocks only on work of its own
//! (a guest call, an embedded journal's flush) and waits for everything
//! else through futures.

use std::future::Future;
use std::pin::Pin;

/// A loop to run until it returns. It need not be `Send`: it is made where
/// it runs (a shard worker's guest instances never leave its thread).
pub type Task = Pin<Box<dyn Future<Output = ()> + 'static>>;

/// Makes a loop, where it will run.
pub type MakeTask = Box<dyn FnOnce() -> Task + Send + 'static>;

/// Runs a node's loops.
pub trait Spawner: Send + Sync + 'static {
    /// Starts the loop `make` makes, named for people (thread names, logs).
    fn spawn(&self, name: String, make: MakeTask) -> std::io::Result<Box<dyn Joiner>>;
}

/// Waits for a spawned loop to end.
pub trait Joiner: Send + Sync {
    /// Blocks until the loop has returned (at once where it cannot block:
    /// a task dropped with its host). `false` if it panicked.
    fn join(self: Box<Self>) -> bool;
}
