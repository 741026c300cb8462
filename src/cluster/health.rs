//! `/healthz` (the process serves) and `/readyz` (its watches have synced),
//! for the DaemonSet's probes. A minimal HTTP/1.1 responder: two fixed
//! paths, no request body, no keep-alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::ControllerError;

/// Binds `addr` now (so a bad address fails the start) and serves until
/// `stopped` resolves.
pub(super) async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ControllerError::Http { addr, source })?;
    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            let conn = tokio::select! {
                _ = &mut stopped => return,
                c = listener.accept() => c,
            };
            let Ok((mut sock, _)) = conn else { continue };
            let ready = ready.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let line = String::from_utf8_lossy(&buf[..n]);
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let (code, body) = match path {
                    "/healthz" => ("200 OK", "ok\n"),
                    "/readyz" if ready.load(Ordering::Relaxed) => ("200 OK", "ok\n"),
                    "/readyz" => ("503 Service Unavailable", "watches not synced yet\n"),
                    _ => ("404 Not Found", "not found\n"),
                };
                let reply = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
}
