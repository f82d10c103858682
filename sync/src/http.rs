//! The companion's own HTTP endpoint (`PG_TENANCY_SYNC_LISTEN`): `GET /health`, `GET /metrics`,
//! and `POST /webhooks/workos`, which only triggers a poll of the Events API once its signature
//! checks out (the body is never applied: webhooks are unordered and may repeat).

use crate::config::Secret;
use crate::error::SyncError;
use crate::metrics::Metrics;
use crate::workos::webhook;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Largest webhook body read.
const MAX_BODY: usize = 1 << 20;

/// The first wait after a failed accept, and the longest.
const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// What the handlers share.
pub struct State {
    pub metrics: Arc<Metrics>,
    pub webhook_secrets: Vec<Secret>,
    pub trigger: Arc<Notify>,
    /// `/health` answers 503 when the last successful poll is older than this.
    pub stale_after: Duration,
}

/// Serves connections until the process ends (never returns; the service supervises it). Each
/// connection is a task of its own, not supervised: it ends with its connection, and a panic in
/// one ends that connection only. A failed accept (out of file descriptors, most often: a flood
/// of idle connections) is logged and waited out, 10 ms doubling up to 1 s, instead of retried at
/// once: retried at once it spun a core and kept no descriptor free for the database or WorkOS.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) -> Result<(), SyncError> {
    let mut pause = ACCEPT_PAUSE_FIRST;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                pause = ACCEPT_PAUSE_FIRST;
                stream
            }
            Err(error) => {
                if pause == ACCEPT_PAUSE_FIRST {
                    tracing::warn!(problem = %error, "the endpoint cannot accept connections; waiting");
                }
                state.metrics.error("accept");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(request, state.clone()));
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, service)
                .await;
        });
    }
}

/// A plain-text response.
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Routes one request.
async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    Ok(match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => {
            let age = state.metrics.poll_age();
            let fresh = age.is_some_and(|a| a <= state.stale_after.as_secs_f64());
            let body = serde_json::json!({ "status": if fresh { "ok" } else { "stale" }, "poll_age_seconds": age })
                .to_string();
            text(
                if fresh {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                body,
            )
        }
        (&Method::GET, "/metrics") => text(StatusCode::OK, state.metrics.render()),
        (&Method::POST, "/webhooks/workos") if !state.webhook_secrets.is_empty() => {
            let signature = request
                .headers()
                .get("workos-signature")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n".into())),
            };
            let now_ms = chrono::Utc::now().timestamp_millis();
            match webhook::verify(signature.as_deref(), &body, &state.webhook_secrets, now_ms) {
                Ok(()) => {
                    state.trigger.notify_one();
                    text(StatusCode::ACCEPTED, "polling\n".into())
                }
                Err(why) => {
                    state.metrics.error("webhook_signature");
                    tracing::warn!(why = format!("{why:?}").to_lowercase(), "webhook refused");
                    text(StatusCode::UNAUTHORIZED, "bad signature\n".into())
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    })
}
