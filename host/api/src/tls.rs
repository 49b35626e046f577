//! TLS for both servers: rustls with the ring provider. One PEM certificate
//! chain and key serve gRPC (tonic's TLS, ALPN `h2`) and HTTP (this
//! module's [`TlsListener`] under `axum::serve`, ALPN `http/1.1`).
//! A plain-text client on a TLS port fails its handshake and is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken HTTPS connections waiting for `axum::serve` to take them.
const ACCEPT_QUEUE: usize = 64;

/// A certificate or key that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("TLS key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS certificate {cert} and key {key} cannot be used together: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Makes ring the process's rustls provider (tonic's server builds its
/// rustls config from the process default); idempotent.
pub fn install_crypto_provider() {
    // Err: a provider is installed already, which is what we want.
    let _ = ring::default_provider().install_default();
}

/// The node's TLS identity, checked when loaded.
#[derive(Clone)]
pub struct TlsConfig {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    http: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads a PEM certificate chain and its PEM private key (PKCS#8,
    /// PKCS#1 or SEC1); errors name the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        install_crypto_provider();
        let cert_error = |reason: String| TlsError::Certificate {
            path: cert.to_owned(),
            reason,
        };
        let key_error = |reason: String| TlsError::Key {
            path: key.to_owned(),
            reason,
        };
        let cert_pem = std::fs::read(cert).map_err(|e| cert_error(e.to_string()))?;
        let key_pem = std::fs::read(key).map_err(|e| key_error(e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(format!("not valid PEM: {e}")))?;
        if chain.is_empty() {
            return Err(cert_error("no PEM `CERTIFICATE` section found".into()));
        }
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                key_error("no PEM private key section found".into())
            }
            e => key_error(format!("not valid PEM: {e}")),
        })?;
        let mut http = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private_key))
            .map_err(|e| TlsError::Pair {
                cert: cert.to_owned(),
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert_pem,
            key_pem,
            http: Arc::new(http),
        })
    }

    /// The same identity for tonic's server.
    pub(crate) fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// Wraps an HTTP listener: connections come out handshaken.
    pub(crate) fn listener(&self, tcp: TcpListener) -> std::io::Result<TlsListener> {
        TlsListener::new(tcp, tokio_rustls::TlsAcceptor::from(self.http.clone()))
    }
}

/// A TCP listener whose connections are TLS streams, for `axum::serve`.
///
/// A background task accepts and runs the handshakes concurrently (a slow
/// or plain-text client never holds up the others); it stops when the
/// listener is dropped, which `axum::serve` does on graceful shutdown.
pub(crate) struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(Self { local_addr, ready })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Dropped with this task: handshakes in progress are abandoned.
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small replies must not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    handshakes.spawn(async move {
                        let result =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                        (result, peer)
                    });
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::error!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                match done {
                    Ok((Ok(Ok(stream)), peer)) => {
                        if tx.send((stream, peer)).await.is_err() {
                            return;
                        }
                    }
                    Ok((Ok(Err(e)), peer)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Ok((Err(_), peer)) => tracing::debug!(%peer, "TLS handshake timed out"),
                    Err(e) => tracing::debug!(error = %e, "TLS handshake task failed"),
                }
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
