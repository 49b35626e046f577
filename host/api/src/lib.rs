//! The node's edges: gRPC ([`grpc`], package `stead.v1`, plus the standard
//! health service and server reflection), HTTP/JSON ([`http`]) and Prometheus
//! metrics ([`metrics`]). Errors become statuses in one place ([`errors`]).
//! Admin calls need the bearer token when the node has one ([`auth`], the
//! one check of both protocols); both servers speak TLS when given a
//! certificate ([`tls`], rustls with ring).
//!
//! Invariant: only this module sees protobuf and HTTP types; everything
//! below it speaks [`stead_node::Node`].

pub mod auth;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod metrics;
mod sse;
pub mod tls;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::net::TcpListener;

use stead_cluster::Cluster;
use stead_cluster::router::Router;
use stead_node::Node;

/// Generated code of `proto/stead/v1/stead.proto`.
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod proto {
    tonic::include_proto!("stead.v1");

    /// The encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/stead_v1_descriptor.bin"));
}

/// Largest component accepted by `Admin.Deploy` and `POST /v1/components`.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;

/// What every handler shares.
pub struct ApiState {
    pub node: Arc<Node>,
    /// Where commands and views run: here, or (in a cluster) on the node
    /// serving their shard.
    pub router: Router,
    /// This node's part in a cluster, if it is a member.
    pub cluster: Option<Arc<Cluster>>,
    pub metrics: Arc<metrics::Metrics>,
    pub started: Instant,
    /// Who may make admin calls.
    pub auth: auth::AdminAuth,
    ready: AtomicBool,
}

impl ApiState {
    /// Admin calls open (a node on loopback only).
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Self::with_auth(node, auth::AdminAuth::open())
    }

    /// Admin calls checked by `auth`.
    pub fn with_auth(node: Arc<Node>, auth: auth::AdminAuth) -> Arc<Self> {
        Self::build(node, auth, None)
    }

    /// A member of `cluster`: requests for shards served elsewhere are
    /// forwarded, and readiness includes the cluster's.
    pub fn clustered(node: Arc<Node>, auth: auth::AdminAuth, cluster: Arc<Cluster>) -> Arc<Self> {
        Self::build(node, auth, Some(cluster))
    }

    fn build(node: Arc<Node>, auth: auth::AdminAuth, cluster: Option<Arc<Cluster>>) -> Arc<Self> {
        let metrics = Arc::new(metrics::Metrics::new());
        node.set_commit_observer(metrics.clone());
        let router = match &cluster {
            Some(cluster) => cluster.router(),
            None => Router::local(node.clone()),
        };
        Arc::new(Self {
            node,
            router,
            cluster,
            metrics,
            started: Instant::now(),
            auth,
            ready: AtomicBool::new(false),
        })
    }

    /// Ready: the journal is open and the deployed components are loaded
    /// (both done by `Node::open`), the servers are listening, and every
    /// shard the node wants is served (with a shared journal: its lease
    /// held and renewed in time); in a cluster: a ready member serving every
    /// shard placed on it.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Why the node is not ready, if it is not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("starting".into());
        }
        if let Some(cluster) = &self.cluster {
            return cluster.readiness();
        }
        let leases = self.node.lease_status();
        if leases.held < leases.wanted {
            return Err(format!(
                "serving {} of {} shards: the others are held by another node until their leases expire, or the journal ({}) cannot be reached to renew them",
                leases.held,
                leases.wanted,
                self.node.journal_description()
            ));
        }
        Ok(())
    }
}

/// Failure to start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(String),
    #[error("HTTP server: {0}")]
    Http(String),
}

/// Listening sockets of a node.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    /// Binds both addresses (port 0 picks a free port).
    pub async fn bind(grpc: SocketAddr, http: SocketAddr) -> Result<Self, ServeError> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        Ok(Self {
            grpc: bind(grpc).await?,
            http: bind(http).await?,
        })
    }
}

/// Serves gRPC and HTTP (over TLS with `tls`) until `shutdown` resolves,
/// then stops accepting and finishes the requests in flight.
pub async fn serve(
    state: Arc<ApiState>,
    listeners: Listeners,
    tls: Option<&tls::TlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Small requests and replies: without TCP_NODELAY, Nagle's algorithm
    // and delayed ACKs hold one back up to 40 ms (a p99.9 of 45 ms).
    let grpc = serve_grpc(
        state.clone(),
        tls,
        tonic::transport::server::TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
        wait_stop(stop_rx.clone()),
    );
    let router = http::router(state.clone());
    let http: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls {
        Some(tls) => {
            let listener = tls
                .listener(listeners.http)
                .map_err(|e| ServeError::Http(e.to_string()))?;
            Box::pin(
                axum::serve(listener, router)
                    .with_graceful_shutdown(wait_stop(stop_rx))
                    .into_future(),
            )
        }
        None => Box::pin(
            axum::serve(
                // Small replies must not wait for Nagle's algorithm.
                axum::serve::ListenerExt::tap_io(listeners.http, |tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                router,
            )
            .with_graceful_shutdown(wait_stop(stop_rx))
            .into_future(),
        ),
    };
    state.ready.store(true, Ordering::Relaxed);
    let (grpc, http) = tokio::join!(grpc, http);
    grpc?;
    http.map_err(|e| ServeError::Http(e.to_string()))?;
    Ok(())
}

/// Serves the gRPC services (the public ones, health, reflection and, in a
/// cluster, the peer service) on the connections `incoming` yields until
/// `shutdown` resolves: what [`serve`] runs on its TCP listener, and the
/// simulator on its simulated network.
pub async fn serve_grpc<I, IO, IE>(
    state: Arc<ApiState>,
    tls: Option<&tls::TlsConfig>,
    incoming: I,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use proto::admin_server::AdminServer;
    use proto::entities_server::EntitiesServer;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EntitiesServer<grpc::EntitiesService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<grpc::AdminService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Grpc(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Grpc(e.to_string()))?;
    let max_command = state.node.config().limits.max_command_bytes + 4096;
    let mut grpc = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        grpc = grpc
            .tls_config(tls.grpc())
            .map_err(|e| ServeError::Grpc(format!("TLS: {e}")))?;
    }
    let admin = AdminServer::new(grpc::AdminService {
        state: state.clone(),
    })
    .max_decoding_message_size(MAX_COMPONENT_BYTES);
    grpc.add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            EntitiesServer::new(grpc::EntitiesService {
                state: state.clone(),
            })
            .max_decoding_message_size(max_command),
        )
        // The token check covers the Admin service only.
        .add_service(tonic::service::interceptor::InterceptedService::new(
            admin,
            state.auth.clone(),
        ))
        .add_optional_service(
            state
                .cluster
                .as_ref()
                .map(|cluster| cluster.peer_service().into_server()),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ServeError::Grpc(e.to_string()))
}
