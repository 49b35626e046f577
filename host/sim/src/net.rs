//! The simulated network under the node's own network seams: gRPC served
//! on turmoil's TCP ([`incoming`], [`SimStream`]), peers dialled over it
//! ([`SimDialer`]), and gossip over turmoil's UDP ([`SimGossip`]). tonic and
//! chitchat run unpatched on top: only the sockets are simulated, so
//! partitions, held links and latency apply to every byte a node sends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use stead_cluster::forward::{Connection, Dialer, Dialing};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A simulated TCP connection as tonic's server wants it.
pub struct SimStream(pub turmoil::net::TcpStream);

impl tonic::transport::server::Connected for SimStream {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections a simulated listener accepts, as a stream.
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<SimStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| SimStream(s));
        Some((accepted, listener))
    })
}

/// Dials peers over the simulated network.
pub struct SimDialer;

impl Dialer for SimDialer {
    fn dial(&self, addr: &str) -> Dialing {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            Ok(Box::new(stream) as Box<dyn Connection>)
        })
    }
}

/// Gossip over simulated UDP. chitchat keeps its wire encoding to itself,
/// so a datagram carries a ticket for the envelope, kept in the run's
/// [`Mailbox`]: turmoil decides whether, when and to whom the datagram
/// arrives (partitions, held links and latency apply), and the receiver
/// takes the envelope its ticket names.
pub struct SimGossip {
    pub mailbox: Arc<Mailbox>,
}

/// The envelopes in flight of one run, by ticket.
#[derive(Default)]
pub struct Mailbox {
    inner: Mutex<(u64, BTreeMap<u64, ChitchatEnvelope>)>,
}

impl Mailbox {
    fn post(&self, envelope: ChitchatEnvelope) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 += 1;
        let ticket = inner.0;
        inner.1.insert(ticket, envelope);
        ticket
    }

    fn take(&self, ticket: u64) -> Option<ChitchatEnvelope> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .remove(&ticket)
    }
}

#[async_trait::async_trait]
impl Transport for SimGossip {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = turmoil::net::UdpSocket::bind(listen_addr).await?;
        Ok(Box::new(SimSocket {
            socket,
            mailbox: self.mailbox.clone(),
        }))
    }
}

struct SimSocket {
    socket: turmoil::net::UdpSocket,
    mailbox: Arc<Mailbox>,
}

#[async_trait::async_trait]
impl Socket for SimSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let ticket = self.mailbox.post(envelope).to_be_bytes();
        // A datagram to a host that is down is lost, as on a real network.
        let num_bytes_sent = self.socket.send_to(&ticket, to).await.unwrap_or(0);
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let mut buf = [0u8; 8];
        loop {
            let (n, from_addr) = self.socket.recv_from(&mut buf).await?;
            if n == 8
                && let Some(envelope) = self.mailbox.take(u64::from_be_bytes(buf))
            {
                return Ok(RecvOutcome {
                    from_addr,
                    envelope,
                    num_bytes_received: n,
                });
            }
        }
    }
}
