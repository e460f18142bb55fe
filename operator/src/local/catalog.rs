//! The local catalog: [`SqliteCatalog`] implements the engine's [`Catalog`] seam and the
//! gateway's [`FileStore`] over the SQLite [`Db`], running each call on a blocking thread
//! (deposits through the group-commit [`DepositWriter`]) and announcing every change.

use async_trait::async_trait;
use deposito_api::lifecycle::Lifecycle;
use deposito_api::FileKey;

use super::db::Db;
use super::deposits::DepositWriter;
use super::namespace_defaults::NamespaceDefaults;
use crate::engine::{
    self, now_ms, AgingChange, AgingError, Catalog, Changes, Deposit, FileRecord, ObservedStatus,
};
use crate::gateway::store::FileStore;

/// The engine's [`Catalog`] seam over [`Db`]: each call on a blocking thread, each change
/// announced through [`Changes`].
pub struct SqliteCatalog {
    db: Db,
    deposits: DepositWriter,
    changes: Changes,
    defaults: NamespaceDefaults,
}

impl SqliteCatalog {
    /// The catalog over `db`, with its deposit writer thread (see [`DepositWriter`]).
    pub fn new(db: Db) -> std::io::Result<Self> {
        Ok(Self {
            deposits: DepositWriter::start(db.clone())?,
            defaults: NamespaceDefaults::load(&db).map_err(std::io::Error::other)?,
            db,
            changes: Changes::default(),
        })
    }

    /// Forgets the default lifecycle of `namespace`, whose row is gone.
    pub(super) fn forget_namespace_default(&self, namespace: &str) {
        self.defaults.forget(namespace);
    }

    /// The database underneath (membership keeps its replica table there).
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn key(namespace: &str, file_name: &str) -> Result<FileKey, engine::CatalogError> {
        FileKey::new(namespace, file_name).map_err(|e| engine::CatalogError::Invalid(e.to_string()))
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
    fn default_lifecycle(&self, namespace: &str) -> Option<Lifecycle> {
        self.defaults.get(namespace)
    }

    async fn get(&self, key: &FileKey) -> Result<Option<FileRecord>, engine::CatalogError> {
        Ok(self.db.lookup(key)?)
    }

    async fn keys(&self) -> Result<Vec<FileKey>, engine::CatalogError> {
        Ok(self.db.run(super::db::Db::keys).await?)
    }

    async fn publish(
        &self,
        record: &FileRecord,
        status: &ObservedStatus,
    ) -> Result<bool, engine::CatalogError> {
        let (key, generation, status) = (record.key.clone(), record.generation, status.clone());
        let changed = self
            .db
            .run(move |db| db.write_status(&key, generation, &status))
            .await?;
        if changed {
            self.changes.status_changed(&record.key);
        }
        Ok(changed)
    }

    async fn expire(&self, record: &FileRecord) -> Result<bool, engine::CatalogError> {
        let r = record.clone();
        let marked = self.db.run(move |db| db.expire(&r, now_ms())).await?;
        if marked {
            self.changes.desired_changed(&record.key);
        }
        Ok(marked)
    }

    async fn finalize(&self, record: &FileRecord) -> Result<bool, engine::CatalogError> {
        let (key, generation) = (record.key.clone(), record.generation);
        let removed = self
            .db
            .run(move |db| db.finalize_delete(&key, generation))
            .await?;
        if removed {
            self.changes.status_changed(&record.key);
        }
        Ok(removed)
    }

    fn changes(&self) -> &Changes {
        &self.changes
    }

    /// The database is the whole truth of this mode: a key without a row is claimed by
    /// nothing (a catalog restored from an older backup still is: the replicas' trash is the
    /// safety net for that).
    async fn claim(&self, key: &FileKey) -> engine::Claim {
        let key = key.clone();
        match self.db.run(move |db| db.get(&key)).await {
            Ok(Some(_)) => engine::Claim::Claimed,
            Ok(None) => engine::Claim::Unclaimed,
            Err(err) => engine::Claim::Unknown(format!("reading the catalog: {err}")),
        }
    }

    fn completeness(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The gateway's reads and writes.
#[async_trait]
impl FileStore for SqliteCatalog {
    async fn namespace_lifecycle(
        &self,
        namespace: &str,
    ) -> Result<Option<Lifecycle>, engine::CatalogError> {
        Ok(self.defaults.get(namespace))
    }

    async fn set_namespace_lifecycle(
        &self,
        namespace: &str,
        lifecycle: Option<Lifecycle>,
    ) -> Result<(), engine::CatalogError> {
        let keys = self.defaults.set(&self.db, namespace, lifecycle)?;
        for key in &keys {
            self.changes.desired_changed(key);
        }
        Ok(())
    }

    async fn storage_key(
        &self,
        namespace: &str,
        file_name: &str,
    ) -> Result<FileKey, engine::CatalogError> {
        Self::key(namespace, file_name)
    }

    async fn lookup(
        &self,
        namespace: &str,
        file_name: &str,
    ) -> Result<Option<FileRecord>, engine::CatalogError> {
        Ok(self.db.lookup(&Self::key(namespace, file_name)?)?)
    }

    async fn list(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FileRecord>, bool), engine::CatalogError> {
        let (namespace, after) = (namespace.to_string(), after.map(str::to_string));
        Ok(self
            .db
            .run(move |db| db.page(&namespace, after.as_deref(), limit))
            .await?)
    }

    /// The file name is the key's name in this mode.
    async fn put(&self, deposit: Deposit) -> Result<FileRecord, engine::CatalogError> {
        let key = deposit.key.clone();
        let acked_ms = deposit.attrs.modified_ms;
        let entry = self.deposits.put(deposit).await?;
        if entry.aging.acked_ms != acked_ms {
            // A retention lock taken after the gateway's check kept the old content.
            let until = entry.aging.retain_until_ms.unwrap_or(acked_ms);
            return Err(AgingError::Retained(until).into());
        }
        self.changes.desired_changed(&key);
        Ok(entry)
    }

    async fn set_replicas(
        &self,
        key: &FileKey,
        replicas: u32,
    ) -> Result<Option<FileRecord>, engine::CatalogError> {
        let change = AgingChange {
            replicas: Some(replicas),
            ..AgingChange::default()
        };
        self.set_aging(key, change).await
    }

    async fn set_aging(
        &self,
        key: &FileKey,
        change: AgingChange,
    ) -> Result<Option<FileRecord>, engine::CatalogError> {
        let k = key.clone();
        let entry = self
            .db
            .run(move |db| db.set_aging(&k, &change, now_ms()))
            .await?;
        if entry.is_some() {
            self.changes.desired_changed(key);
        }
        Ok(entry)
    }

    async fn mark_deleting(
        &self,
        key: &FileKey,
    ) -> Result<Option<FileRecord>, engine::CatalogError> {
        let k = key.clone();
        let entry = self
            .db
            .run(move |db| db.mark_deleting(&k, now_ms()))
            .await?;
        if entry.is_some() {
            self.changes.desired_changed(key);
        }
        Ok(entry)
    }

    async fn ready(&self) -> Result<(), engine::CatalogError> {
        Ok(self.db.run(super::db::Db::ping).await?)
    }
}
