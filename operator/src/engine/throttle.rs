//! The re-replication throttle: at most K pulls at once into any one replica, shared by every
//! reconcile of the engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// At most K pulls at once into each replica.
#[derive(Debug)]
pub struct PullThrottle {
    per_replica: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl PullThrottle {
    pub fn new(per_replica: usize) -> Self {
        Self {
            per_replica: per_replica.max(1),
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a pull slot on `replica`.
    pub async fn acquire(&self, replica: &str) -> tokio::sync::OwnedSemaphorePermit {
        let semaphore = self
            .semaphores
            .lock()
            .expect("throttle")
            .entry(replica.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_replica)))
            .clone();
        semaphore.acquire_owned().await.expect("never closed")
    }
}
