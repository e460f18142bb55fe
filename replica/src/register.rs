//! Registration with the operator and periodic heartbeats (local and compose modes): the
//! heartbeat worker.

use std::time::Duration;

use async_trait::async_trait;
use deposito_api::replica::RegisterResponse;
use deposito_util::worker::{Next, StepError, Worker};
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
        .bearer_auth(app.token.presented())
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

/// Registers at start-up and then every heartbeat period (`--heartbeat-secs`, or what the
/// operator's last answer asked for). A failure is logged once (then at debug level until a
/// registration succeeds again) and retried a period later; it is no failed step, so an
/// operator that is down does not fill the log.
pub struct HeartbeatWorker {
    app: AppState,
    /// The operator's base URL.
    operator: String,
    period: Duration,
    failing: bool,
}

impl HeartbeatWorker {
    /// Heartbeats of `app` to the operator at `operator`.
    pub fn new(app: AppState, operator: String) -> Self {
        let period = Duration::from_secs(app.config.heartbeat_secs.max(1));
        Self {
            app,
            operator,
            period,
            failing: false,
        }
    }
}

#[async_trait]
impl Worker for HeartbeatWorker {
    fn name(&self) -> String {
        "heartbeat".into()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let operator = &self.operator;
        match register_once(&self.app, operator).await {
            Ok(asked) => {
                if self.failing {
                    tracing::info!(%operator, "registration succeeded again");
                }
                self.failing = false;
                if let Some(secs) = asked {
                    self.period = Duration::from_secs(secs);
                }
            }
            Err(e) => {
                if self.failing {
                    tracing::debug!(%operator, error = %e, "registration still failing");
                } else {
                    tracing::warn!(%operator, error = %e, "registration failed; retrying");
                }
                self.failing = true;
            }
        }
        Ok(Next::After(self.period))
    }
}
