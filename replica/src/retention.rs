//! The trash retention worker: deletes trashed copies once they are older than
//! `--trash-retention-secs`, looking once a minute (or sooner, for a short retention).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deposito_util::worker::{Next, StepError, Worker};

use crate::storage::Store;

/// Longest pause between two looks at the trash.
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// Looks at the trash at start-up, then every `every`; a failed look is retried as late.
pub struct RetentionWorker {
    store: Arc<Store>,
    retention: Duration,
    every: Duration,
}

impl RetentionWorker {
    /// Deletes the copies of `store`'s trash older than `retention`.
    pub fn new(store: Arc<Store>, retention: Duration) -> Self {
        Self {
            store,
            retention,
            every: (retention / 4).clamp(Duration::from_secs(1), LOOK_EVERY),
        }
    }
}

#[async_trait]
impl Worker for RetentionWorker {
    fn name(&self) -> String {
        "trash-retention".into()
    }

    /// One look; shutdown may drop it between two deletions (`Store::expire_trash` counts
    /// each as it happens, and the next start deletes the rest).
    async fn step(&mut self) -> Result<Next, StepError> {
        match self.store.expire_trash(self.retention).await {
            Ok(_) => Ok(Next::After(self.every)),
            Err(err) => Err(StepError::new(
                format!("trash retention: cannot delete expired copies: {err}"),
                self.every,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn looks_every_quarter_of_the_retention_between_one_second_and_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 0).await.unwrap());
        let every = |secs| RetentionWorker::new(store.clone(), Duration::from_secs(secs)).every;
        assert_eq!(every(86_400), LOOK_EVERY);
        assert_eq!(every(40), Duration::from_secs(10));
        assert_eq!(every(2), Duration::from_secs(1));
        let mut worker = RetentionWorker::new(store.clone(), Duration::from_secs(40));
        assert_eq!(
            worker.step().await,
            Ok(Next::After(Duration::from_secs(10)))
        );
    }
}
