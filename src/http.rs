//! `--http-addr`: `/healthz` (the process serves), `/readyz` (start-up
//! recovery is done and the first pass over the objects too: the watches
//! have synced, or the manifests directory was read) and `/metrics`
//! (OpenMetrics text). A minimal HTTP/1.1 responder: three fixed paths, GET
//! only, no request body, no keep-alive; nothing else is served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Binds `addr` now (so a bad address fails the start) and serves until
/// `stopped` resolves.
pub async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            let conn = tokio::select! {
                _ = &mut stopped => return,
                c = listener.accept() => c,
            };
            let Ok((mut sock, _)) = conn else { continue };
            let ready = ready.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // The request head, up to its blank line (8 KiB at most,
                // 5 s at most): closing with unread bytes would reset the
                // connection before the client reads the reply.
                let mut buf = Vec::new();
                let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let line = String::from_utf8_lossy(&buf);
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let text = "text/plain; charset=utf-8";
                let (code, kind, body) = match path {
                    "/healthz" => ("200 OK", text, "ok\n".to_string()),
                    "/readyz" if ready.load(Ordering::Relaxed) => ("200 OK", text, "ok\n".to_string()),
                    "/readyz" => (
                        "503 Service Unavailable",
                        text,
                        "start-up recovery or the first pass is not done\n".to_string(),
                    ),
                    "/metrics" => {
                        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode())
                    }
                    _ => ("404 Not Found", text, "not found\n".to_string()),
                };
                let reply = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(())
}
