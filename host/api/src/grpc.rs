//! The gRPC services of `stead.v1` (tonic): `Entities` and `Admin`. The
//! standard health service and server reflection are added in
//! [`super::serve`], and so is the admin token check on `Admin`
//! ([`super::auth`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::ApiState;
use super::errors::{outcome_label, to_status};
use super::proto;
use stead_node::{NodeError, TypeInfo};

/// Events read from the journal per page while streaming.
const STREAM_PAGE: usize = 256;

pub struct EntitiesService {
    pub(super) state: Arc<ApiState>,
}

pub struct AdminService {
    pub(super) state: Arc<ApiState>,
}

#[tonic::async_trait]
impl proto::entities_server::Entities for EntitiesService {
    async fn send(
        &self,
        request: Request<proto::SendRequest>,
    ) -> Result<Response<proto::SendResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let command_id = (!req.command_id.is_empty()).then_some(req.command_id);
        // Debug: the node's `command` span (info) already names the entity,
        // the command id and its seq-nr; this one only adds the protocol.
        let span = tracing::debug_span!("grpc_send", entity_type = %req.entity_type, entity_id = %req.entity_id);
        let result = self
            .state
            .router
            .send(
                &req.entity_type,
                &req.entity_id,
                req.command_json.into_bytes(),
                command_id,
            )
            .instrument(span)
            .await;
        self.state
            .metrics
            .command(&req.entity_type, outcome_label(&result), started.elapsed());
        let reply = result.map_err(|e| to_status(&e))?;
        let reply_json = String::from_utf8(reply.reply)
            .map_err(|e| to_status(&NodeError::Internal(format!("reply is not UTF-8: {e}"))))?;
        Ok(Response::new(proto::SendResponse {
            reply_json,
            seq_nr: reply.seq_nr,
            duplicate: reply.duplicate,
        }))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let req = request.into_inner();
        let view = self
            .state
            .router
            .view(&req.entity_type, &req.entity_id)
            .await
            .map_err(|e| to_status(&e))?;
        let view_json = String::from_utf8(view)
            .map_err(|e| to_status(&NodeError::Internal(format!("view is not UTF-8: {e}"))))?;
        Ok(Response::new(proto::GetResponse { view_json }))
    }

    type StreamEventsStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;
    type SubscribeStream =
        Pin<Box<dyn Stream<Item = Result<proto::SubscribedEvent, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let cursor = (!req.cursor.is_empty()).then_some(req.cursor.as_str());
        let subscription = self
            .state
            .node
            .subscribe(&req.entity_type, cursor)
            .map_err(|e| to_status(&e))?;
        tracing::info!(entity_type = %req.entity_type, cursor = ?cursor, "subscription opened (gRPC)");
        // Pulled by tonic as the client reads (HTTP/2 flow control).
        let events = futures_util::stream::unfold(Some(subscription), |state| async move {
            let mut sub = state?;
            match sub.next().await {
                Ok(e) => {
                    let cursor = if sub.has_buffered() {
                        String::new()
                    } else {
                        sub.cursor().to_string()
                    };
                    let message = proto::SubscribedEvent {
                        entity_type: e.entity_type,
                        entity_id: e.entity_id,
                        seq_nr: e.seq_nr,
                        shard: e.shard,
                        position: e.position,
                        timestamp_ms: e.timestamp_ms,
                        event_json: String::from_utf8_lossy(&e.payload).into_owned(),
                        cursor,
                    };
                    Some((Ok(message), Some(sub)))
                }
                Err(e) => Some((Err(to_status(&e)), None)),
            }
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn stream_events(
        &self,
        request: Request<proto::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let req = request.into_inner();
        let state = self.state.clone();
        // Fail fast on an unknown type or invalid id, before the stream starts.
        let first = read_page(
            &state,
            &req.entity_type,
            &req.entity_id,
            req.from_seq_nr.max(1),
        )
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_PAGE);
        tokio::spawn(async move {
            let mut page = first;
            loop {
                let Some(next_from) = page.last().map(|e| e.seq_nr + 1) else {
                    return;
                };
                let full = page.len() == STREAM_PAGE;
                for event in page {
                    if tx.send(Ok(event)).await.is_err() {
                        return; // the client went away
                    }
                }
                if !full {
                    return;
                }
                page = match read_page(&state, &req.entity_type, &req.entity_id, next_from).await {
                    Ok(page) => page,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

async fn read_page(
    state: &Arc<ApiState>,
    entity_type: &str,
    entity_id: &str,
    from: u64,
) -> Result<Vec<proto::Event>, Status> {
    let state = state.clone();
    let (entity_type, entity_id) = (entity_type.to_owned(), entity_id.to_owned());
    let events = tokio::task::spawn_blocking(move || {
        state
            .node
            .events(&entity_type, &entity_id, from, STREAM_PAGE)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| to_status(&e))?;
    Ok(events
        .into_iter()
        .map(|e| proto::Event {
            seq_nr: e.seq_nr,
            event_json: String::from_utf8_lossy(&e.record.payload).into_owned(),
            command_id: e.record.command_id,
            timestamp_ms: e.record.timestamp_ms,
        })
        .collect())
}

pub(super) fn entity_type(t: TypeInfo) -> proto::EntityType {
    proto::EntityType {
        name: t.name,
        version: t.version,
        snapshot_every: t.snapshot_every,
        sha256: t.hash,
        size_bytes: t.size as u64,
        contract: t.contract,
    }
}

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn deploy(
        &self,
        request: Request<proto::DeployRequest>,
    ) -> Result<Response<proto::DeployResponse>, Status> {
        let bytes = request.into_inner().component;
        let state = self.state.clone();
        let info = tokio::task::spawn_blocking(move || state.node.deploy(&bytes))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(proto::DeployResponse {
            entity_type: Some(entity_type(info)),
        }))
    }

    async fn list_types(
        &self,
        _request: Request<proto::ListTypesRequest>,
    ) -> Result<Response<proto::ListTypesResponse>, Status> {
        let types = self
            .state
            .node
            .types()
            .into_iter()
            .map(entity_type)
            .collect();
        Ok(Response::new(proto::ListTypesResponse { types }))
    }

    async fn node_info(
        &self,
        _request: Request<proto::NodeInfoRequest>,
    ) -> Result<Response<proto::NodeInfoResponse>, Status> {
        let node = &self.state.node;
        let stats = node.stats().await.map_err(|e| to_status(&e))?;
        let config = node.config();
        Ok(Response::new(proto::NodeInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            data_dir: config.data_dir.display().to_string(),
            shard_count: config.shard_count,
            workers: config.shards.workers as u32,
            active_entities: stats.active_entities as u64,
            uptime_ms: self.state.started.elapsed().as_millis() as u64,
            shards_held: u32::try_from(stats.shards).unwrap_or(u32::MAX),
            journal: node.journal_description(),
        }))
    }

    async fn cluster_status(
        &self,
        _request: Request<proto::ClusterStatusRequest>,
    ) -> Result<Response<proto::ClusterStatusResponse>, Status> {
        let Some(cluster) = &self.state.cluster else {
            return Err(Status::failed_precondition(
                "this node runs alone (start it with --seeds to make it a cluster member)",
            ));
        };
        let status = cluster.status();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(proto::ClusterStatusResponse {
            node_id: status.node_id,
            members: status
                .members
                .into_iter()
                .map(|m| proto::ClusterMember {
                    node_id: m.node_id,
                    state: m.state,
                    grpc: m.grpc,
                    http: m.http,
                    shards_held: count(m.shards_held),
                    shards_placed: count(m.shards_placed),
                })
                .collect(),
            shards: status
                .shards
                .into_iter()
                .map(|s| proto::ClusterShard {
                    shard: s.shard,
                    holder: s.holder.unwrap_or_default(),
                    epoch: s.epoch.unwrap_or_default(),
                    placed: s.placed.unwrap_or_default(),
                })
                .collect(),
        }))
    }
}
