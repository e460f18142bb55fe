//! Kube mode's background workers, run by the process's [`Workers`] runner beside the
//! engine's: the watches that feed the reflectors, the re-check of StoredFile list access,
//! and the orphan path (routing the engine's triggers, collecting orphans, the slow sweep).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deposito_api::FileKey;
use deposito_util::worker::{Next, StepError, Worker};
use futures::stream::BoxStream;
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use super::cached::CachedFile;
use super::catalog::KubeCatalog;
use crate::engine::queue::{Done, Priority, WorkQueue};
use crate::engine::{Engine, InventoryIndex};

/// A watch stream and what is done with each of its items: one item per step, done when
/// the stream ends.
pub struct Watch<T> {
    name: &'static str,
    stream: BoxStream<'static, T>,
    on_item: Box<dyn FnMut(T) + Send>,
}

impl<T: Send + 'static> Watch<T> {
    /// `name` for logs and metrics (`storedfile-watch`), `on_item` for each item.
    pub fn new(
        name: &'static str,
        stream: BoxStream<'static, T>,
        on_item: impl FnMut(T) + Send + 'static,
    ) -> Self {
        Self {
            name,
            stream,
            on_item: Box::new(on_item),
        }
    }
}

#[async_trait]
impl<T: Send + 'static> Worker for Watch<T> {
    fn name(&self) -> String {
        self.name.into()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        match self.stream.next().await {
            Some(item) => {
                (self.on_item)(item);
                Ok(Next::Now)
            }
            None => Ok(Next::Done),
        }
    }
}

/// `list-recheck`: a watch that resumes after a failure may deliver nothing; this looks
/// whether StoredFiles can be listed again, so that orphan collection does not stay paused
/// for nothing.
pub struct ListRecheck {
    pub catalog: Arc<KubeCatalog>,
    pub every: Duration,
}

#[async_trait]
impl Worker for ListRecheck {
    fn name(&self) -> String {
        "list-recheck".into()
    }

    fn first_step_after(&self) -> Duration {
        self.every
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        self.catalog.recheck().await;
        Ok(Next::After(self.every))
    }
}

/// `trigger-router`: the engine's triggers (files whose copies or replicas changed). Keys
/// with a StoredFile go to the controller; keys without one in a namespace this operator
/// manages may be orphans, for the orphan queue (which collects nothing without a complete
/// view). Copies in other namespaces are never touched.
pub struct TriggerRouter {
    pub triggers: mpsc::UnboundedReceiver<FileKey>,
    pub catalog: Arc<KubeCatalog>,
    pub to_controller: mpsc::UnboundedSender<ObjectRef<CachedFile>>,
    pub orphans: Arc<WorkQueue>,
}

#[async_trait]
impl Worker for TriggerRouter {
    fn name(&self) -> String {
        "trigger-router".into()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let Some(key) = self.triggers.recv().await else {
            return Ok(Next::Done);
        };
        if self.catalog.cached(&key.namespace, &key.name).is_some() {
            let _ = self
                .to_controller
                .send(ObjectRef::<CachedFile>::new(&key.name).within(&key.namespace));
        } else if self.catalog.manages(&key.namespace) {
            self.orphans.add(key, Priority::Normal);
        }
        Ok(Next::Now)
    }
}

/// `orphan-collector-N`: looks at the orphan queue's keys one at a time (the engine keeps
/// every copy unless the catalog's view is complete and nothing claims it).
pub struct OrphanCollector {
    pub n: usize,
    pub engine: Arc<Engine>,
    pub orphans: Arc<WorkQueue>,
}

#[async_trait]
impl Worker for OrphanCollector {
    fn name(&self) -> String {
        format!("orphan-collector-{}", self.n)
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let key = self.orphans.next().await;
        let done = match self.engine.collect_orphans(&key).await {
            Ok(outcome) => Done::Ok {
                requeue_after: outcome.requeue_after,
            },
            Err(err) => Done::Failed(err.category()),
        };
        self.orphans.done(&key, done);
        Ok(Next::Now)
    }
}

/// `orphan-sweep`: the slow sweep for copies no StoredFile claims, each period.
pub struct OrphanSweep {
    pub index: Arc<InventoryIndex>,
    pub catalog: Arc<KubeCatalog>,
    pub orphans: Arc<WorkQueue>,
    pub every: Duration,
}

#[async_trait]
impl Worker for OrphanSweep {
    fn name(&self) -> String {
        "orphan-sweep".into()
    }

    fn first_step_after(&self) -> Duration {
        self.every
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        for key in self.index.keys() {
            if self.catalog.cached(&key.namespace, &key.name).is_none()
                && self.catalog.manages(&key.namespace)
            {
                self.orphans.add(key, Priority::Normal);
            }
        }
        Ok(Next::After(self.every))
    }
}

/// File names per batch of the resync.
const RESYNC_BATCH: usize = 200;

/// `resync`: the slow safety net. Every StoredFile goes to the controller once per period,
/// a batch at a time, the batches spread evenly over the period. Reconciles do not ask to be
/// requeued for it: the controller's scheduler would then hold an entry (two copies of the
/// object's reference) for every StoredFile at all times.
pub struct Resync {
    catalog: Arc<KubeCatalog>,
    to_controller: mpsc::UnboundedSender<ObjectRef<CachedFile>>,
    every: Duration,
    /// Where the pass under way goes on.
    cursor: Option<super::file_index::WalkCursor>,
    /// When the pass under way started, and the pause between its batches.
    pass: Option<(Instant, Duration)>,
}

impl Resync {
    pub fn new(
        catalog: Arc<KubeCatalog>,
        to_controller: mpsc::UnboundedSender<ObjectRef<CachedFile>>,
        every: Duration,
    ) -> Self {
        Self {
            catalog,
            to_controller,
            every,
            cursor: None,
            pass: None,
        }
    }
}

#[async_trait]
impl Worker for Resync {
    fn name(&self) -> String {
        "resync".into()
    }

    fn first_step_after(&self) -> Duration {
        self.every
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let (started, pause) = *self.pass.get_or_insert_with(|| {
            let batches = self.catalog.file_count().div_ceil(RESYNC_BATCH).max(1);
            let pause = self.every / u32::try_from(batches).unwrap_or(u32::MAX);
            (Instant::now(), pause.max(Duration::from_millis(1)))
        });
        let (batch, next) = self.catalog.walk(self.cursor.as_ref(), RESYNC_BATCH);
        for (namespace, name) in batch {
            if self
                .to_controller
                .send(ObjectRef::<CachedFile>::new(&name).within(&namespace))
                .is_err()
            {
                return Ok(Next::Done);
            }
        }
        self.cursor = next;
        if self.cursor.is_some() {
            return Ok(Next::After(pause));
        }
        self.pass = None;
        Ok(Next::After(self.every.saturating_sub(started.elapsed())))
    }
}
