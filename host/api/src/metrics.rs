//! Prometheus metrics of a node, served at `GET /metrics` (OpenMetrics text).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `stead_commands_total` | counter | `entity_type`, `outcome` (`ok` or an error code) |
//! | `stead_command_duration_seconds` | histogram | `entity_type` |
//! | `stead_guest_faults_total` | counter | `entity_type` |
//! | `stead_journal_flush_duration_seconds` | histogram | |
//! | `stead_journal_batch_entities` | histogram | |
//! | `stead_active_entities` | gauge | |
//! | `stead_shards_held` | gauge | |
//! | `stead_activations_total`, `stead_passivations_total` | counter | |
//! | `stead_cluster_members` | gauge | `state` (`joining`, `ready`, `leaving`; members only) |
//! | `stead_cluster_isolated` | gauge | 1 while cut off from most members and serving nothing |

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use stead_journal::CommitObserver;
use stead_node::NodeStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    entity_type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    entity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The node's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    commands: Family<CommandLabels, Counter>,
    command_seconds: Family<TypeLabels, Histogram, fn() -> Histogram>,
    guest_faults: Family<TypeLabels, Counter>,
    flush_seconds: Histogram,
    batch_entities: Histogram,
    active_entities: Gauge,
    shards_held: Gauge,
    cluster_members: Family<StateLabels, Gauge>,
    cluster_isolated: Gauge,
    activations: Counter,
    passivations: Counter,
    seen_activations: AtomicU64,
    seen_passivations: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "stead_commands",
            "Commands handled, by entity type and outcome",
            commands.clone(),
        );
        let command_seconds =
            Family::<TypeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "stead_command_duration_seconds",
            "Time from receiving a command to its reply (durable)",
            command_seconds.clone(),
        );
        let guest_faults = Family::<TypeLabels, Counter>::default();
        registry.register(
            "stead_guest_faults",
            "Guest traps, deadline overruns, memory-limit hits and invalid outputs",
            guest_faults.clone(),
        );
        let flush_seconds = latency_histogram();
        registry.register(
            "stead_journal_flush_duration_seconds",
            "Duration of one durable journal commit (group commit)",
            flush_seconds.clone(),
        );
        let batch_entities = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "stead_journal_batch_entities",
            "Entities appended by one durable journal commit",
            batch_entities.clone(),
        );
        let active_entities = Gauge::default();
        registry.register(
            "stead_active_entities",
            "Entities in memory",
            active_entities.clone(),
        );
        let shards_held = Gauge::default();
        registry.register(
            "stead_shards_held",
            "Shards whose lease this node holds and serves",
            shards_held.clone(),
        );
        let cluster_members = Family::<StateLabels, Gauge>::default();
        registry.register(
            "stead_cluster_members",
            "Cluster members this node sees, by state",
            cluster_members.clone(),
        );
        let cluster_isolated = Gauge::default();
        registry.register(
            "stead_cluster_isolated",
            "1 while this node is cut off from most of the cluster's members and serves nothing",
            cluster_isolated.clone(),
        );
        let activations = Counter::default();
        registry.register(
            "stead_activations",
            "Entities recovered into memory",
            activations.clone(),
        );
        let passivations = Counter::default();
        registry.register(
            "stead_passivations",
            "Entities dropped from memory",
            passivations.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            commands,
            command_seconds,
            guest_faults,
            flush_seconds,
            batch_entities,
            active_entities,
            shards_held,
            cluster_members,
            cluster_isolated,
            activations,
            passivations,
            seen_activations: AtomicU64::new(0),
            seen_passivations: AtomicU64::new(0),
        }
    }

    /// Records one command's outcome (`ok` or an error code) and latency.
    pub fn command(&self, entity_type: &str, outcome: &str, elapsed: Duration) {
        self.commands
            .get_or_create(&CommandLabels {
                entity_type: entity_type.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        let labels = TypeLabels {
            entity_type: entity_type.to_owned(),
        };
        self.command_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if outcome == "guest_fault" {
            self.guest_faults.get_or_create(&labels).inc();
        }
    }

    /// Brings the node-level gauges and counters up to date.
    pub fn observe_node(&self, stats: NodeStats) {
        self.active_entities.set(stats.active_entities as i64);
        self.shards_held.set(stats.shards as i64);
        let a = self
            .seen_activations
            .swap(stats.activations, Ordering::Relaxed);
        self.activations.inc_by(stats.activations.saturating_sub(a));
        let p = self
            .seen_passivations
            .swap(stats.passivations, Ordering::Relaxed);
        self.passivations
            .inc_by(stats.passivations.saturating_sub(p));
    }

    /// Brings the cluster gauges up to date (members only).
    pub fn observe_cluster(&self, cluster: &stead_cluster::Cluster) {
        let status = cluster.status();
        for state in ["joining", "ready", "leaving"] {
            let count = status.members.iter().filter(|m| m.state == state).count();
            self.cluster_members
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(count as i64);
        }
        self.cluster_isolated.set(i64::from(cluster.is_isolated()));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl CommitObserver for Metrics {
    fn committed(&self, entities: usize, elapsed: Duration) {
        self.flush_seconds.observe(elapsed.as_secs_f64());
        self.batch_entities.observe(entities as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_commands_appear_in_the_text_format() {
        let m = Metrics::new();
        m.command("account", "ok", Duration::from_millis(2));
        m.command("account", "guest_fault", Duration::from_millis(2));
        m.committed(3, Duration::from_millis(1));
        m.observe_node(NodeStats {
            active_entities: 7,
            activations: 9,
            passivations: 2,
            deferred: 0,
            shards: 4,
        });
        let text = m.encode();
        assert!(
            text.contains(r#"stead_commands_total{entity_type="account",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"stead_guest_faults_total{entity_type="account"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("stead_command_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("stead_journal_flush_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("stead_active_entities 7"), "{text}");
        assert!(text.contains("stead_shards_held 4"), "{text}");
        assert!(text.contains("stead_activations_total 9"), "{text}");
    }
}
