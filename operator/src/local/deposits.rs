//! Group commit of deposits to the SQLite catalog.
//!
//! Every acknowledged deposit is one `synchronous=FULL` commit (an fsync of the WAL). Made one
//! at a time, concurrent deposits queue behind each other's fsyncs; here one thread takes every
//! deposit waiting, writes them all in one transaction and commits once, then answers each.
//! Each deposit is still durable before it is acknowledged; a batch costs one fsync.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::db::{Db, DbError};
use crate::engine::{Deposit, FileRecord};

/// Most deposits written in one transaction.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<FileRecord, String>>;

/// Handle to the deposit writer thread; the thread ends when the handle is dropped.
pub struct DepositWriter {
    queue: mpsc::Sender<(Deposit, Reply)>,
}

impl DepositWriter {
    /// Starts the writer over `db`.
    pub fn start(db: Db) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("deposito-deposits".into())
            .spawn(move || run(&db, jobs))?;
        Ok(Self { queue })
    }

    /// Records `deposit` (see [`Db::put_content`]), committed with the deposits waiting
    /// beside it.
    pub async fn put(&self, deposit: Deposit) -> Result<FileRecord, DbError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || DbError::Task("the deposit writer stopped".to_string());
        self.queue.send((deposit, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(DbError::Commit)
    }
}

fn run(db: &Db, jobs: mpsc::Receiver<(Deposit, Reply)>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter().take(MAX_BATCH - 1));
        let (deposits, replies): (Vec<Deposit>, Vec<Reply>) = batch.into_iter().unzip();
        match db.put_contents(&deposits) {
            Ok(entries) => {
                for (reply, entry) in replies.into_iter().zip(entries) {
                    let _ = reply.send(Ok(entry));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, deposits = deposits.len(), "catalog commit failed");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deposito_api::FileKey;

    /// Concurrent deposits are each recorded with their own content, and each survives a
    /// reopen of the database (committed, not only answered).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deposits_are_all_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let writer = std::sync::Arc::new(DepositWriter::start(Db::open(&path).unwrap()).unwrap());
        let tasks: Vec<_> = (0..100u32)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move {
                    let key = FileKey::new("default", &format!("f{i}")).unwrap();
                    let sha = format!("{i:064x}");
                    w.put(Deposit::of_key(&key, 1 + i % 3, &sha, u64::from(i), "r1"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let entry = t.await.unwrap();
            assert_eq!(entry.key.name, format!("f{i}"));
            assert_eq!(entry.sha256, format!("{i:064x}"));
            assert_eq!(entry.generation, 1);
        }
        drop(writer);
        let reopened = Db::open(&path).unwrap();
        let all = reopened.list(Some("default")).unwrap();
        assert_eq!(all.len(), 100);
        for e in all {
            let i: u32 = e.key.name[1..].parse().unwrap();
            assert_eq!((e.replicas, e.size), (1 + i % 3, u64::from(i)));
        }
    }
}
