//! Subscriptions: one entity type's events, from every shard's stream.
//!
//! A [`Subscription`] reads the journal's shard streams from a
//! [`Cursor`] (each shard's last position read), catching up on history and
//! then following new events. It reads from the journal, not from this
//! node's workers, so it sees every shard whichever node of a cluster holds
//! it, and a cursor taken from one node resumes on any other.
//!
//! Invariants:
//! - events of one shard come in that shard's position order (its commit
//!   order), so each entity's events come in seq-nr order; shards are
//!   interleaved in no particular order;
//! - every event after the cursor is returned exactly once, durable events
//!   only (the journal's stream contract);
//! - memory is bounded: the subscription is pulled ([`Subscription::next`])
//!   and holds at most one page ([`PAGE_EVENTS`] events); a slow consumer
//!   slows the reads, never grows a buffer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use stead_journal::{AsyncJournal, Cursor, JournalError, ShardId, StreamEvent};

use crate::NodeError;

/// Events read from the journal at once, at most (over all shards read).
pub(crate) const PAGE_EVENTS: usize = 512;
/// How long a caught-up subscription waits before reading again.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The longest wait between reads of a journal out of reach.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One event as a subscriber gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedEvent {
    pub entity_type: String,
    pub entity_id: String,
    pub seq_nr: u64,
    /// The event's shard and its position in the shard's stream: a
    /// subscriber that records them (in a [`Cursor`]) resumes exactly after
    /// this event.
    pub shard: ShardId,
    pub position: u64,
    /// When the command that emitted it ran (ms since the epoch).
    pub timestamp_ms: u64,
    /// The event as the entity emitted it (JSON).
    pub payload: Vec<u8>,
}

/// A running subscription (see the module docs).
pub struct Subscription {
    journal: Arc<dyn AsyncJournal>,
    entity_type: String,
    shard_count: u32,
    cursor: Cursor,
    /// The page being handed out.
    page: VecDeque<StreamEvent>,
    /// Shards whose last read filled its share: read them alone next.
    more: Vec<ShardId>,
    /// The last read was of `more` alone: the next reads every shard, so a
    /// busy shard never starves the others.
    read_more: bool,
    poll_interval: Duration,
}

impl Subscription {
    pub(crate) fn new(
        journal: Arc<dyn AsyncJournal>,
        entity_type: &str,
        shard_count: u32,
        cursor: Cursor,
    ) -> Self {
        Self {
            journal,
            entity_type: entity_type.to_owned(),
            shard_count,
            cursor,
            page: VecDeque::new(),
            more: Vec::new(),
            read_more: false,
            poll_interval: POLL_INTERVAL,
        }
    }

    /// The cursor after the last event returned by [`Subscription::next`]:
    /// a subscription opened with it starts with the event after.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Whether the next [`Subscription::next`] answers from the page in
    /// memory (a stream can flush its output when it does not).
    pub fn has_buffered(&self) -> bool {
        !self.page.is_empty()
    }

    /// The next event, waiting for one if the subscription has caught up.
    /// A journal out of reach is waited for (retried with backoff, from the
    /// same cursor); only a corrupt record is an error.
    pub async fn next(&mut self) -> Result<SubscribedEvent, NodeError> {
        let mut backoff = self.poll_interval;
        loop {
            if let Some(next) = self.page.pop_front() {
                self.cursor.advance(next.shard, next.position);
                return Ok(SubscribedEvent {
                    entity_type: self.entity_type.clone(),
                    entity_id: next.entity_id,
                    seq_nr: next.event.seq_nr,
                    shard: next.shard,
                    position: next.position,
                    timestamp_ms: next.event.record.timestamp_ms,
                    payload: next.event.record.payload,
                });
            }
            match self.fill().await {
                Ok(true) => backoff = self.poll_interval,
                Ok(false) => tokio::time::sleep(self.poll_interval).await,
                Err(NodeError::Storage(e)) if !matches!(e, JournalError::Corrupt { .. }) => {
                    tracing::warn!(error = %e, entity_type = %self.entity_type, "subscription waits for the journal");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next page; `false` when every shard is caught up.
    async fn fill(&mut self) -> Result<bool, NodeError> {
        // Shards known to have more first, alone, with all the page's room;
        // else every shard, with an equal share (at least one each).
        self.read_more = !self.read_more && !self.more.is_empty();
        let shards: Vec<ShardId> = if self.read_more {
            std::mem::take(&mut self.more)
        } else {
            (0..self.shard_count).collect()
        };
        let limit = (PAGE_EVENTS / shards.len().max(1)).max(1);
        let from = self.cursor.positions(shards);
        let page = self
            .journal
            .read_stream(&self.entity_type, &from, limit)
            .await
            .map_err(NodeError::Storage)?;
        let mut counts: std::collections::BTreeMap<ShardId, usize> = Default::default();
        for event in &page {
            *counts.entry(event.shard).or_default() += 1;
        }
        self.more = counts
            .into_iter()
            .filter(|&(_, n)| n >= limit)
            .map(|(s, _)| s)
            .collect();
        let found = !page.is_empty();
        self.page = page.into();
        Ok(found)
    }
}
