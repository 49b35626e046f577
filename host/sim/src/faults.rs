//! A seed's fault schedule: what goes wrong, when, and when it heals.
//! Every fault heals by the end of the fault phase, so the liveness phase
//! starts from a whole cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use crate::clock::SimClock;
use crate::db::Database;

/// One thing that goes wrong (or is put right).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// No message between the two, either way.
    Partition(String, String),
    /// Messages from the first to the second are lost.
    PartitionOneWay(String, String),
    /// The node's process dies (restarted by its heal).
    Crash(String),
    /// Every message to and from the node is held (delivered at the
    /// thaw), long enough for its leases to run out: a paused process.
    Freeze(String),
    /// The node's monotonic clock jumps forward by this many ms.
    MonoJump(String, u64),
    /// The node's wall clock steps by this many ms (either way).
    WallStep(String, i64),
    /// The node cannot reach the database.
    DbOutage(String),
    /// The node is cut off from the other nodes (not from clients); the
    /// database parks its appends and loses its lease calls until the heal
    /// (within the node's journal timeout): a zombie whose writes, sent
    /// under a valid lease, arrive after its lease expired and its shards
    /// moved.
    Zombie(String),
    Heal(Heal),
}

/// What puts a fault right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heal {
    Partition(String, String),
    PartitionOneWay(String, String),
    Restart(String),
    Thaw(String),
    DbOutage(String),
    Unzombie(String),
    /// The wall clock is stepped back by what it stepped (NTP corrects it):
    /// a node whose clock stays minutes behind would hold its timers back
    /// for as long, past the run.
    WallStep(String, i64),
}

impl Fault {
    /// The fault's kind, for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition(..) => "partition",
            Fault::PartitionOneWay(..) => "one-way partition",
            Fault::Crash(_) => "crash and restart",
            Fault::Freeze(_) => "freeze past the lease ttl",
            Fault::MonoJump(..) => "monotonic clock jump",
            Fault::WallStep(..) => "wall clock step",
            Fault::DbOutage(_) => "database outage",
            Fault::Zombie(_) => "zombie (cut off, its writes delayed)",
            Fault::Heal(_) => "heal",
        }
    }
}

/// A fault at a simulated time.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Duration,
    pub fault: Fault,
}

/// Faults and heals in time order.
pub struct Schedule {
    pub events: Vec<Event>,
}

impl Schedule {
    /// Draws 2 to 8 faults between `from` and `heal_at`; each heals after
    /// a while, and by `heal_at` at the latest.
    pub fn draw(
        rng: &mut SmallRng,
        nodes: &[String],
        from: Duration,
        heal_at: Duration,
        ttl: Duration,
    ) -> Self {
        let mut events = Vec::new();
        let window = u64::try_from((heal_at - from).as_millis()).unwrap_or(1);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(1);
        let pick = |rng: &mut SmallRng| nodes[rng.random_range(0..nodes.len())].clone();
        for _ in 0..rng.random_range(2..=8) {
            let at = from + Duration::from_millis(rng.random_range(0..window));
            let lasts = Duration::from_millis(rng.random_range(200..=3 * ttl_ms));
            let until = (at + lasts).min(heal_at);
            let a = pick(rng);
            let mut b = pick(rng);
            if b == a {
                b = nodes[(nodes.iter().position(|n| *n == a).unwrap_or(0) + 1) % nodes.len()]
                    .clone();
            }
            let (fault, heal) = match rng.random_range(0..9) {
                0 => (
                    Fault::Partition(a.clone(), b.clone()),
                    Some(Heal::Partition(a, b)),
                ),
                1 => (
                    Fault::PartitionOneWay(a.clone(), b.clone()),
                    Some(Heal::PartitionOneWay(a, b)),
                ),
                2 => (Fault::Crash(a.clone()), Some(Heal::Restart(a))),
                3 => {
                    // Held just past the ttl: the case of a paused holder.
                    let held = Duration::from_millis(ttl_ms + rng.random_range(0..=ttl_ms));
                    events.push(Event {
                        at: (at + held).min(heal_at),
                        fault: Fault::Heal(Heal::Thaw(a.clone())),
                    });
                    (Fault::Freeze(a), None)
                }
                4 => (Fault::MonoJump(a, rng.random_range(1..=3 * ttl_ms)), None),
                5 => {
                    let ms = rng.random_range(-60_000..=60_000);
                    (Fault::WallStep(a.clone(), ms), Some(Heal::WallStep(a, -ms)))
                }
                6 | 7 => {
                    let held = Duration::from_millis(3 * ttl_ms / 2 + rng.random_range(0..=ttl_ms));
                    events.push(Event {
                        at: (at + held).min(heal_at),
                        fault: Fault::Heal(Heal::Unzombie(a.clone())),
                    });
                    (Fault::Zombie(a), None)
                }
                _ => (Fault::DbOutage(a.clone()), Some(Heal::DbOutage(a))),
            };
            events.push(Event { at, fault });
            if let Some(heal) = heal {
                events.push(Event {
                    at: until,
                    fault: Fault::Heal(heal),
                });
            }
        }
        // Stable: a fault and its heal at one instant keep their order.
        events.sort_by_key(|e| e.at);
        Self { events }
    }
}

/// Does what `fault` says to the simulation.
pub fn apply(
    sim: &mut turmoil::Sim<'_>,
    fault: &Fault,
    clocks: &BTreeMap<String, Arc<SimClock>>,
    db: &Database,
) {
    let others = |n: &str| -> Vec<String> {
        clocks
            .keys()
            .filter(|k| k.as_str() != n)
            .cloned()
            .chain(std::iter::once("db".to_owned()))
            .collect()
    };
    match fault {
        Fault::Partition(a, b) => sim.partition(a.as_str(), b.as_str()),
        Fault::PartitionOneWay(a, b) => sim.partition_oneway(a.as_str(), b.as_str()),
        Fault::Crash(n) => sim.crash(n.as_str()),
        Fault::Freeze(n) => {
            for o in others(n) {
                sim.hold(n.as_str(), o.as_str());
            }
        }
        Fault::MonoJump(n, ms) => {
            if let Some(c) = clocks.get(n) {
                c.jump_mono(*ms);
            }
        }
        Fault::WallStep(n, ms) => {
            if let Some(c) = clocks.get(n) {
                c.step_wall(*ms);
            }
        }
        Fault::DbOutage(n) => sim.partition(n.as_str(), "db"),
        Fault::Zombie(n) => {
            for o in clocks.keys().filter(|k| *k != n) {
                sim.partition(n.as_str(), o.as_str());
            }
            db.stall(n);
        }
        Fault::Heal(Heal::Partition(a, b)) => sim.repair(a.as_str(), b.as_str()),
        Fault::Heal(Heal::PartitionOneWay(a, b)) => sim.repair_oneway(a.as_str(), b.as_str()),
        Fault::Heal(Heal::Restart(n)) => sim.bounce(n.as_str()),
        Fault::Heal(Heal::Thaw(n)) => {
            for o in others(n) {
                sim.release(n.as_str(), o.as_str());
            }
        }
        Fault::Heal(Heal::DbOutage(n)) => sim.repair(n.as_str(), "db"),
        Fault::Heal(Heal::WallStep(n, ms)) => {
            if let Some(c) = clocks.get(n) {
                c.step_wall(*ms);
            }
        }
        Fault::Heal(Heal::Unzombie(n)) => {
            db.unstall(n);
            for o in clocks.keys().filter(|k| *k != n) {
                sim.repair(n.as_str(), o.as_str());
            }
        }
    }
}
