//! [`DbJournal`]: a node's client of the simulated [`Database`], the
//! node's `AsyncJournal`: each call a request over simulated TCP on a
//! pooled connection, bounded by the timeout PostgreSQL's client has.
//!
//! Invariant: an answer of the wrong kind is an error, never taken for
//! another call's result.

use super::*;
use stead_journal::StreamEvent;

/// A node's client of the [`Database`].
pub struct DbJournal {
    node: String,
    addr: String,
    /// The ttl the node is told (the database's, except in the broken
    /// variant where leases never expire).
    ttl: Duration,
    timeout: Duration,
    idle: Mutex<Vec<turmoil::net::TcpStream>>,
}

impl DbJournal {
    pub fn new(node: &str, addr: String, ttl: Duration, timeout: Duration) -> Self {
        Self {
            node: node.to_owned(),
            addr,
            ttl,
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<turmoil::net::TcpStream>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `call`, waits for its answer; any failure is `Unavailable`
    /// (the outcome of a write is then unknown), and its connection is
    /// not reused.
    fn call(&self, call: Call) -> BoxFuture<'_, Result<Answer, JournalError>> {
        let request = postcard::to_allocvec(&Request {
            node: self.node.clone(),
            call,
        });
        Box::pin(async move {
            let unavailable = |what: String| {
                JournalError::Unavailable(format!(
                    "the simulated database at {}: {what}",
                    self.addr
                ))
            };
            let request = request.map_err(|e| unavailable(format!("encoding: {e}")))?;
            let pooled = self.idle().pop();
            let exchange = async {
                let mut stream = match pooled {
                    Some(stream) => stream,
                    None => turmoil::net::TcpStream::connect(self.addr.as_str()).await?,
                };
                write_frame(&mut stream, &request).await?;
                let answer = read_frame(&mut stream).await?;
                Ok::<_, std::io::Error>((stream, answer))
            };
            let (stream, answer) = tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
                .map_err(|e| unavailable(e.to_string()))?;
            self.idle().push(stream);
            postcard::from_bytes(&answer).map_err(|e| unavailable(format!("decoding: {e}")))
        })
    }
}

fn wrong() -> JournalError {
    JournalError::Io("the simulated database answered another call".into())
}

impl AsyncJournal for DbJournal {
    fn set_commit_observer(&self, _observer: Arc<dyn CommitObserver>) {}

    fn lease_ttl(&self) -> Option<Duration> {
        Some(self.ttl)
    }

    fn claim_shards<'a>(
        &'a self,
        shards: &'a [ShardId],
    ) -> BoxFuture<'a, Result<Vec<FenceToken>, JournalError>> {
        let call = self.call(Call::Claim(shards.to_vec()));
        Box::pin(async move {
            match call.await? {
                Answer::Tokens(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn renew_shards<'a>(
        &'a self,
        tokens: &'a [FenceToken],
    ) -> BoxFuture<'a, Result<Vec<FenceToken>, JournalError>> {
        let call = self.call(Call::Renew(tokens.to_vec()));
        Box::pin(async move {
            match call.await? {
                Answer::Tokens(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn release_shards<'a>(
        &'a self,
        tokens: &'a [FenceToken],
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        let call = self.call(Call::Release(tokens.to_vec()));
        Box::pin(async move {
            match call.await? {
                Answer::Done(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn append(&self, appends: Vec<EntityAppend>) -> BoxFuture<'_, Vec<Result<(), AppendError>>> {
        let n = appends.len();
        let call = self.call(Call::Append(appends));
        Box::pin(async move {
            match call.await {
                Ok(Answer::Appended(r)) if r.len() == n => r,
                Ok(_) => vec![Err(AppendError::Storage(wrong())); n],
                Err(e) => vec![Err(AppendError::Storage(e)); n],
            }
        })
    }

    fn last_seq_nr<'a>(&'a self, key: &'a EntityKey) -> BoxFuture<'a, Result<u64, JournalError>> {
        let call = self.call(Call::LastSeqNr(key.clone()));
        Box::pin(async move {
            match call.await? {
                Answer::SeqNr(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn read_events<'a>(
        &'a self,
        key: &'a EntityKey,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, JournalError>> {
        let call = self.call(Call::ReadEvents(key.clone(), from, limit));
        Box::pin(async move {
            match call.await? {
                Answer::Events(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn read_stream<'a>(
        &'a self,
        entity_type: &'a str,
        from: &'a [(ShardId, u64)],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StreamEvent>, JournalError>> {
        let call = self.call(Call::ReadStream(
            entity_type.to_owned(),
            from.to_vec(),
            limit,
        ));
        Box::pin(async move {
            match call.await? {
                Answer::Stream(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn save_snapshot<'a>(
        &'a self,
        key: &'a EntityKey,
        snapshot: &'a SnapshotRecord,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        let call = self.call(Call::SaveSnapshot(key.clone(), snapshot.clone()));
        Box::pin(async move {
            match call.await? {
                Answer::Done(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn load_snapshot<'a>(
        &'a self,
        key: &'a EntityKey,
    ) -> BoxFuture<'a, Result<Option<SnapshotRecord>, JournalError>> {
        let call = self.call(Call::LoadSnapshot(key.clone()));
        Box::pin(async move {
            match call.await? {
                Answer::Snapshot(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn find_command_ids<'a>(
        &'a self,
        lookups: &'a [(EntityKey, String)],
    ) -> BoxFuture<'a, Result<Vec<Option<CommandIdRecord>>, JournalError>> {
        let call = self.call(Call::FindCommandIds(lookups.to_vec()));
        Box::pin(async move {
            match call.await? {
                Answer::Found(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn expire_command_ids(
        &self,
        fence: FenceToken,
        before_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<usize, AppendError>> {
        let call = self.call(Call::ExpireCommandIds(fence, before_ms, limit));
        Box::pin(async move {
            match call.await.map_err(AppendError::Storage)? {
                Answer::Expired(r) => r,
                _ => Err(AppendError::Storage(wrong())),
            }
        })
    }

    fn read_outbox<'a>(
        &'a self,
        shard: ShardId,
        after: Option<&'a SendId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingSend>, JournalError>> {
        let call = self.call(Call::ReadOutbox(shard, after.cloned(), limit));
        Box::pin(async move {
            match call.await? {
                Answer::Outbox(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn ack_sends<'a>(
        &'a self,
        fence: FenceToken,
        ids: &'a [SendId],
    ) -> BoxFuture<'a, Result<(), AppendError>> {
        let call = self.call(Call::AckSends(fence, ids.to_vec()));
        Box::pin(async move {
            match call.await.map_err(AppendError::Storage)? {
                Answer::Acked(r) => r,
                _ => Err(AppendError::Storage(wrong())),
            }
        })
    }

    fn answer_sends<'a>(
        &'a self,
        fence: FenceToken,
        answers: &'a [(SendId, stead_journal::Answer)],
    ) -> BoxFuture<'a, Result<(), AppendError>> {
        let call = self.call(Call::AnswerSends(fence, answers.to_vec()));
        Box::pin(async move {
            match call.await.map_err(AppendError::Storage)? {
                Answer::Acked(r) => r,
                _ => Err(AppendError::Storage(wrong())),
            }
        })
    }

    fn read_timers<'a>(
        &'a self,
        shard: ShardId,
        after: Option<(&'a EntityKey, &'a str)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingTimer>, JournalError>> {
        let after = after.map(|(key, name)| (key.clone(), name.to_owned()));
        let call = self.call(Call::ReadTimers(shard, after, limit));
        Box::pin(async move {
            match call.await? {
                Answer::Timers(r) => r,
                _ => Err(wrong()),
            }
        })
    }

    fn ack_timers<'a>(
        &'a self,
        fence: FenceToken,
        fired: &'a [FiredTimer],
    ) -> BoxFuture<'a, Result<(), AppendError>> {
        let call = self.call(Call::AckTimers(fence, fired.to_vec()));
        Box::pin(async move {
            match call.await.map_err(AppendError::Storage)? {
                Answer::Acked(r) => r,
                _ => Err(AppendError::Storage(wrong())),
            }
        })
    }
}
