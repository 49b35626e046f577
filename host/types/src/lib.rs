//! What every layer of the stead host shares, with no behaviour of its own:
//! identities ([`ids`]), the stable shard hash ([`shard`]), the clock seam
//! ([`clock`]), the task seam ([`spawn`]), every option with its default
//! ([`config`]) and the side effects a guest returns ([`effects`]).
//!
//! Invariant: this crate depends on no other stead crate; the others point
//! at it.

pub mod clock;
pub mod config;
pub mod effects;
pub mod ids;
pub mod shard;
pub mod spawn;

pub use clock::{Clock, SettableClock, SystemClock};
pub use ids::{EntityKey, FenceToken, ShardId};
pub use spawn::{Joiner, MakeTask, Spawner, Task};
