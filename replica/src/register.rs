//! Registration with the operator and periodic heartbeats (local and compose modes).

use std::time::Duration;

use deposito_api::replica::RegisterResponse;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use crate::app::AppState;

/// Sends one registration; returns the heartbeat period the operator asked for, if any.
#[instrument(skip(app))]
pub async fn register_once(app: &AppState, base: &str) -> anyhow::Result<Option<u64>> {
    let url = format!("{}/v1/replicas/register", base.trim_end_matches('/'));
    let body = app.describe().await;
    let resp = app
        .http
        .post(&url)
        .bearer_auth(&app.token)
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        anyhow::bail!("POST {url}: {status}: {text}");
    }
    let text = resp.text().await?;
    Ok(serde_json::from_str::<RegisterResponse>(&text)
        .ok()
        .map(|r| r.heartbeat_secs)
        .filter(|s| *s > 0))
}

/// Registers now and then every heartbeat until cancelled. Failures are logged and retried.
pub async fn run(app: AppState, base: String, cancel: CancellationToken) {
    let mut period = app.config.heartbeat_secs.max(1);
    let mut failing = false;
    loop {
        match register_once(&app, &base).await {
            Ok(p) => {
                if failing {
                    tracing::info!(operator = %base, "registration succeeded again");
                }
                failing = false;
                if let Some(p) = p {
                    period = p;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(operator = %base, error = %e, "registration failed; retrying");
                } else {
                    tracing::debug!(operator = %base, error = %e, "registration still failing");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(period)) => {}
        }
    }
}
