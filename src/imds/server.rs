//! The accept loop: HTTP/1.1 on one listener, with caps on open
//! connections, header-read timeouts, bounded buffers and a graceful drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::connection::Connection;
use super::handler::{Listener, MetadataService};
use crate::entitlement::canonical;

/// Slow clients get this long to send their request headers (and an idle
/// connection this long to send its first byte).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight at shutdown get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// What one connection may buffer: hyper's minimum. Metadata requests are a
/// few hundred bytes; a larger head is refused.
const MAX_BUFFER_BYTES: usize = 8 * 1024;

/// Serves `listener` until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: TcpListener,
    kind: Listener,
    service: Arc<MetadataService>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUFFER_BYTES)
        .writev(false);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let caller = canonical(peer.ip());
        // A caller whose request budget is spent is refused first, before
        // any system call or HTTP parsing: a reconnecting flood costs the
        // agent an accept and a reset per connection.
        if !service
            .request_limit
            .has_budget(&crate::entitlement::Caller::Address(caller))
        {
            refuse_at_accept(&service, stream, caller, "rate-limited");
            continue;
        }
        let connection = Connection::of(&stream, peer);
        let admitted = match service.connections.admit(caller, connection.from_node()) {
            Ok(admitted) => admitted,
            Err(over) => {
                refuse_at_accept(&service, stream, caller, over.label());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _admitted = admitted;
            // Until the first byte arrives the connection costs a socket
            // and this task, not an HTTP parser and its buffers.
            match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.readable()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            // Once per connection, before its first request: who the
            // kernel says is calling (a host-network caller's socket). The
            // lookup may walk the pod tree (milliseconds, rarely): off the
            // runtime's threads, and only for callers on the node's own
            // addresses.
            let connection = match service.cgroups.clone() {
                Some(cgroups)
                    if connection.may_be_host_network(&cgroups)
                        || (kind == Listener::ContainerCredentials
                            && connection.may_be_host_network_direct(&cgroups)) =>
                {
                    let pending = connection.clone();
                    tokio::task::spawn_blocking(move || pending.identified(&cgroups))
                        .await
                        .unwrap_or(connection)
                }
                _ => connection,
            };
            let handler = service_fn(move |request: hyper::Request<Incoming>| {
                let service = service.clone();
                let connection = connection.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        service.handle(request, &connection, kind).await,
                    )
                }
            });
            let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), handler));
            if let Err(error) = connection.await {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    info!(listener = ?kind, "server stopped accepting; draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the drain timeout; closing them");
    }
}

/// Closes a connection at once with a reset, counted and logged (sampled).
fn refuse_at_accept(
    service: &MetadataService,
    stream: TcpStream,
    caller: std::net::IpAddr,
    reason: &'static str,
) {
    // A zero linger resets the connection instead of leaving it in
    // TIME_WAIT; it does not block, which is what the deprecation is about.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
    service.metrics.connection_refused(reason);
    service.decisions.connection_refused(caller, reason);
}
