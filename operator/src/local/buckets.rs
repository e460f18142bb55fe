//! The local catalog's side of the S3 API: declared buckets (the `buckets` table, with their
//! tags) and the attributes kept with each file's content (the `attrs` column), and
//! [`BucketStore`] over them for [`SqliteCatalog`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use deposito_api::FileKey;
use rusqlite::{params, OptionalExtension};

use super::catalog::SqliteCatalog;
use super::db::{decode, row_to_entry, Db, DbError, COLUMNS, COLUMN_COUNT};
use crate::engine::{self, ContentAttrs};
use crate::gateway::store::{Bucket, BucketDeletion, BucketStore, ObjectEntry};

fn parse_attrs(text: &str) -> ContentAttrs {
    // A column written by this code always parses; an unreadable one loses only S3 facts.
    serde_json::from_str(text).unwrap_or_default()
}

fn parse_tags(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

impl Db {
    /// Declared buckets and namespaces holding files, merged, by name.
    pub fn buckets(&self) -> Result<Vec<Bucket>, DbError> {
        let conn = self.conn();
        let mut declared: BTreeMap<String, Bucket> = BTreeMap::new();
        let mut stmt = conn.prepare_cached("SELECT namespace, created_ms, tags FROM buckets")?;
        for row in stmt.query_map([], |row| {
            Ok(Bucket {
                name: row.get(0)?,
                created_ms: row.get::<_, i64>(1)? as u64,
                tags: parse_tags(&row.get::<_, String>(2)?),
            })
        })? {
            let bucket = row?;
            declared.insert(bucket.name.clone(), bucket);
        }
        let mut stmt =
            conn.prepare_cached("SELECT DISTINCT namespace FROM files WHERE deleting = 0")?;
        for name in stmt.query_map([], |row| row.get::<_, String>(0))? {
            let name = name?;
            declared.entry(name.clone()).or_insert(Bucket {
                name,
                created_ms: 0,
                tags: BTreeMap::new(),
            });
        }
        Ok(declared.into_values().collect())
    }

    /// One bucket, declared or holding files.
    pub fn bucket(&self, name: &str) -> Result<Option<Bucket>, DbError> {
        let conn = self.conn();
        let declared = conn
            .prepare_cached("SELECT created_ms, tags FROM buckets WHERE namespace = ?1")?
            .query_row(params![name], |row| {
                Ok(Bucket {
                    name: name.to_string(),
                    created_ms: row.get::<_, i64>(0)? as u64,
                    tags: parse_tags(&row.get::<_, String>(1)?),
                })
            })
            .optional()?;
        if declared.is_some() {
            return Ok(declared);
        }
        let holds_files = conn
            .prepare_cached("SELECT 1 FROM files WHERE namespace = ?1 AND deleting = 0 LIMIT 1")?
            .query_row(params![name], |_| Ok(()))
            .optional()?
            .is_some();
        Ok(holds_files.then(|| Bucket {
            name: name.to_string(),
            created_ms: 0,
            tags: BTreeMap::new(),
        }))
    }

    /// Declares a bucket; false when it already existed.
    pub fn create_bucket(&self, name: &str) -> Result<bool, DbError> {
        if self.bucket(name)?.is_some() {
            return Ok(false);
        }
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO buckets (namespace, created_ms) VALUES (?1, ?2)",
            params![name, engine::now_ms() as i64],
        )?;
        Ok(n == 1)
    }

    /// Removes a declared bucket without files, in one transaction. Files being deleted do
    /// not count: S3 clients delete a bucket right after its objects (`aws s3 rb --force`),
    /// and the copies go on being removed whether the bucket is declared or not.
    pub fn delete_bucket(&self, name: &str) -> Result<BucketDeletion, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let holds_files = tx
            .prepare_cached("SELECT 1 FROM files WHERE namespace = ?1 AND deleting = 0 LIMIT 1")?
            .query_row(params![name], |_| Ok(()))
            .optional()?
            .is_some();
        if holds_files {
            return Ok(BucketDeletion::NotEmpty);
        }
        let n = tx.execute("DELETE FROM buckets WHERE namespace = ?1", params![name])?;
        tx.commit()?;
        Ok(if n == 1 {
            BucketDeletion::Deleted
        } else {
            BucketDeletion::Missing
        })
    }

    /// Replaces a bucket's tags (declaring it when it only held files); false when there is
    /// no such bucket.
    pub fn set_bucket_tags(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool, DbError> {
        let Some(bucket) = self.bucket(name)? else {
            return Ok(false);
        };
        let created = if bucket.created_ms == 0 {
            engine::now_ms()
        } else {
            bucket.created_ms
        };
        self.conn().execute(
            "INSERT INTO buckets (namespace, created_ms, tags) VALUES (?1, ?2, ?3)
             ON CONFLICT (namespace) DO UPDATE SET tags = excluded.tags",
            params![name, created as i64, serde_json::to_string(tags)?],
        )?;
        Ok(true)
    }

    /// Replaces the attributes of `key`'s content if it is still `sha256`.
    pub fn set_attrs(
        &self,
        key: &FileKey,
        sha256: &str,
        attrs: &ContentAttrs,
    ) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "UPDATE files SET attrs = ?4
             WHERE namespace = ?1 AND name = ?2 AND sha256 = ?3 AND deleting = 0",
            params![
                key.namespace,
                key.name,
                sha256,
                serde_json::to_string(attrs)?
            ],
        )?;
        Ok(n == 1)
    }

    /// One undeleted entry with its attributes (through the read-only connection).
    pub fn object(&self, namespace: &str, name: &str) -> Result<Option<ObjectEntry>, DbError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS}, attrs FROM files WHERE namespace = ?1 AND name = ?2 AND deleting = 0"
        ))?;
        let row = stmt
            .query_row(params![namespace, name], |row| {
                Ok((row_to_entry(row)?, row.get::<_, String>(COLUMN_COUNT)?))
            })
            .optional()?;
        row.map(|(pair, attrs)| Ok((decode(pair)?, parse_attrs(&attrs))))
            .transpose()
    }

    /// Up to `limit` undeleted entries of `namespace` starting with `prefix` and after
    /// `after`, by name, and whether more follow. The names starting with a prefix are
    /// contiguous in byte order, so the scan stops at the first name past them.
    pub fn objects(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ObjectEntry>, bool), DbError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS}, attrs FROM files
             WHERE namespace = ?1 AND name >= ?2 AND (?3 IS NULL OR name > ?3) AND deleting = 0
             ORDER BY name LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![namespace, prefix, after, (limit + 1) as i64],
            |row| Ok((row_to_entry(row)?, row.get::<_, String>(COLUMN_COUNT)?)),
        )?;
        let mut entries = Vec::new();
        let mut more = false;
        for row in rows {
            let (pair, attrs) = row?;
            if !pair.0.key.name.starts_with(prefix) {
                break;
            }
            if entries.len() == limit {
                more = true;
                break;
            }
            entries.push((decode(pair)?, parse_attrs(&attrs)));
        }
        Ok((entries, more))
    }
}

#[async_trait]
impl BucketStore for SqliteCatalog {
    async fn buckets(&self) -> Result<Vec<Bucket>, engine::CatalogError> {
        Ok(self.db().run(Db::buckets).await?)
    }

    async fn bucket(&self, name: &str) -> Result<Option<Bucket>, engine::CatalogError> {
        let name = name.to_string();
        Ok(self.db().run(move |db| db.bucket(&name)).await?)
    }

    async fn create_bucket(&self, name: &str) -> Result<bool, engine::CatalogError> {
        let name = name.to_string();
        Ok(self.db().run(move |db| db.create_bucket(&name)).await?)
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDeletion, engine::CatalogError> {
        let owned = name.to_string();
        let deletion = self.db().run(move |db| db.delete_bucket(&owned)).await?;
        if deletion == BucketDeletion::Deleted {
            // Its row held the namespace's default lifecycle too.
            self.forget_namespace_default(name);
        }
        Ok(deletion)
    }

    async fn set_bucket_tags(
        &self,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<bool, engine::CatalogError> {
        let name = name.to_string();
        Ok(self
            .db()
            .run(move |db| db.set_bucket_tags(&name, &tags))
            .await?)
    }

    async fn set_attrs(
        &self,
        key: &FileKey,
        sha256: &str,
        attrs: ContentAttrs,
    ) -> Result<bool, engine::CatalogError> {
        let (key, sha256) = (key.clone(), sha256.to_string());
        Ok(self
            .db()
            .run(move |db| db.set_attrs(&key, &sha256, &attrs))
            .await?)
    }

    async fn object(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectEntry>, engine::CatalogError> {
        Ok(self.db().object(namespace, name)?)
    }

    async fn objects(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ObjectEntry>, bool), engine::CatalogError> {
        let (namespace, prefix) = (namespace.to_string(), prefix.to_string());
        let after = after.map(str::to_string);
        Ok(self
            .db()
            .run(move |db| db.objects(&namespace, &prefix, after.as_deref(), limit))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Deposit;

    fn deposit(db: &Db, ns: &str, name: &str, md5: Option<&str>) {
        let key = FileKey::new(ns, name).unwrap();
        let mut d = Deposit::of_key(&key, 2, &"a".repeat(64), 3, "r1");
        d.attrs.md5_etag = md5.map(str::to_string);
        d.attrs.metadata.insert("replicas".into(), "2".into());
        db.put_content(&d).unwrap();
    }

    /// Buckets are the declared ones plus namespaces with files; only an empty declared
    /// bucket can be deleted; tags survive a reopen.
    #[test]
    fn buckets_merge_declared_and_used_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let db = Db::open(&path).unwrap();
        assert!(db.create_bucket("photos").unwrap());
        assert!(!db.create_bucket("photos").unwrap());
        deposit(&db, "logs", "a.txt", None);
        let names: Vec<String> = db.buckets().unwrap().into_iter().map(|b| b.name).collect();
        assert_eq!(names, ["logs", "photos"]);
        assert!(
            !db.create_bucket("logs").unwrap(),
            "a namespace with files exists"
        );
        assert_eq!(db.delete_bucket("logs").unwrap(), BucketDeletion::NotEmpty);
        assert_eq!(
            db.delete_bucket("nothing").unwrap(),
            BucketDeletion::Missing
        );
        let tags = BTreeMap::from([("replicas".to_string(), "3".to_string())]);
        assert!(db.set_bucket_tags("photos", &tags).unwrap());
        assert!(!db.set_bucket_tags("nothing", &tags).unwrap());
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.bucket("photos").unwrap().unwrap().tags, tags);
        assert_eq!(db.delete_bucket("photos").unwrap(), BucketDeletion::Deleted);
        assert!(db.bucket("photos").unwrap().is_none());
    }

    /// Prefix listing stops at the first name past the prefix, pages with `after`, and
    /// returns the attributes written with the content.
    #[test]
    fn objects_by_prefix_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("catalog.db")).unwrap();
        for name in ["a-1", "b-1", "b-2", "b-3", "c-1"] {
            deposit(&db, "ns", name, Some("d41d8cd98f00b204e9800998ecf8427e"));
        }
        let names = |v: &[ObjectEntry]| {
            v.iter()
                .map(|(r, _)| r.key.name.clone())
                .collect::<Vec<_>>()
        };
        let (page, more) = db.objects("ns", "b-", None, 2).unwrap();
        assert_eq!(
            (names(&page), more),
            (vec!["b-1".into(), "b-2".into()], true)
        );
        let (page, more) = db.objects("ns", "b-", Some("b-2"), 2).unwrap();
        assert_eq!((names(&page), more), (vec!["b-3".to_string()], false));
        let (page, _) = db.objects("ns", "", Some("b-3"), 10).unwrap();
        assert_eq!(names(&page), ["c-1"]);
        let (record, attrs) = db.object("ns", "a-1").unwrap().unwrap();
        assert_eq!(record.replicas, 2);
        assert_eq!(
            attrs.md5_etag.as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(attrs.metadata["replicas"], "2");
        assert!(attrs.modified_ms > 0);
    }
}
