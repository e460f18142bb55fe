//! The trash retention: deletes trashed copies once they are older than
//! `--trash-retention-secs`, looking once a minute (or sooner, for a short retention).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::AppState;

/// Longest pause between two looks at the trash.
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// Runs until `cancel`.
pub async fn run(app: AppState, cancel: CancellationToken) {
    let retention = Duration::from_secs(app.config.trash_retention_secs);
    let every = (retention / 4).clamp(Duration::from_secs(1), LOOK_EVERY);
    loop {
        if let Err(err) = app.store.expire_trash(retention).await {
            tracing::warn!(%err, "trash retention: cannot delete expired copies; trying again");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
