//! What one HTTP client may hold: connections overall and per peer
//! address, and time to send its body. A slow-body flood (thousands of
//! connections trickling a byte every few seconds) once used up the file
//! descriptors and delayed a revocation by 106 s; now such connections are
//! cut off, and the descriptors the revocation path needs (database,
//! directory, SMTP) stay free.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use futures_util::StreamExt;

/// Descriptors kept for everything but client connections: database pool,
/// directory and ticket clients, SMTP, log files, the listener.
pub const RESERVED_FILES: u64 = 256;

/// The process's descriptor limit, raised to its hard limit at start: the
/// soft limit after, and the connection cap that fits under it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Files {
    pub limit: u64,
    pub max_connections: usize,
}

/// Raises the soft descriptor limit as far as the hard limit allows, and
/// lowers `wanted` connections to what fits below it with
/// [`RESERVED_FILES`] to spare.
pub fn raise_file_limit(wanted: usize) -> Files {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the file descriptor limit");
            rlimit::Resource::NOFILE
                .get()
                .map_or(1024, |(soft, _)| soft)
        }
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
    if wanted > fits {
        tracing::warn!(
            wanted,
            fits,
            file_limit = limit,
            "limits.max_connections lowered to fit under the file descriptor limit"
        );
    }
    Files {
        limit,
        max_connections: wanted.min(fits),
    }
}

/// Open connections per peer address. A connection over the cap is shut
/// at once, before it can send a byte: a flood from one address cannot
/// hold the server.
#[derive(Clone)]
pub struct PeerConnections {
    per_peer: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Held in a connection's extensions: counts it until it closes.
struct Counted {
    peer: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl PeerConnections {
    pub fn new(per_peer: usize) -> Self {
        Self {
            per_peer: per_peer.max(1),
            open: Arc::default(),
        }
    }

    /// For `HttpServer::on_connect`: counts the connection, or shuts it.
    pub fn on_connect(&self, connection: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let peer = peer.ip();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(peer).or_insert(0);
        if *n >= self.per_peer {
            drop(open);
            metrics::counter!("jit_http_connections_refused_total", "why" => "per_peer")
                .increment(1);
            jit_app::warn_throttled!("connections_per_peer", %peer, "a peer has too many connections open: the next ones are shut");
            // Shut both ways: the server reads end-of-stream and drops it.
            let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Both);
            return;
        }
        *n += 1;
        drop(open);
        ext.insert(Counted {
            peer,
            open: self.open.clone(),
        });
    }

    /// Connections open now from `peer` (for tests and readiness).
    pub fn open_from(&self, peer: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&peer).copied().unwrap_or(0)
    }
}

/// Middleware: the body must arrive within `deadline` of the request's
/// headers; a body that trickles is cut off (the handler sees a payload
/// error and answers 4xx; the connection is closed).
pub async fn body_deadline(
    deadline: Duration,
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let (_, payload) = req.parts_mut();
    let inner = payload.take();
    let until = tokio::time::Instant::now() + deadline;
    let stream = futures_util::stream::unfold(
        Some((inner, Box::pin(tokio::time::sleep_until(until)))),
        |state| async move {
            let (mut inner, mut sleep) = state?;
            tokio::select! {
                chunk = inner.next() => chunk.map(|chunk| (chunk, Some((inner, sleep)))),
                () = &mut sleep => {
                    metrics::counter!("jit_http_bodies_cut_off_total").increment(1);
                    let late = std::io::Error::new(std::io::ErrorKind::TimedOut, "the body did not arrive in time");
                    Some((Err::<Bytes, _>(PayloadError::Io(late)), None))
                }
            }
        },
    );
    let boxed: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(stream);
    *payload = Payload::from(boxed);
    next.call(req).await
}
