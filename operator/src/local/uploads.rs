//! The local catalog's multipart uploads in progress (the `uploads` table) and
//! [`UploadStore`] over it for [`SqliteCatalog`]. The parts themselves are ordinary files of
//! the parts namespace; only the upload's destination and attributes live here.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::catalog::SqliteCatalog;
use super::db::{Db, DbError};
use crate::engine;
use crate::gateway::store::{Upload, UploadStore};

fn row_to_upload(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Upload, String)> {
    Ok((
        Upload {
            id: row.get(0)?,
            bucket: row.get(1)?,
            key: row.get(2)?,
            replicas: row.get(3)?,
            attrs: Default::default(),
            created_ms: row.get::<_, i64>(5)? as u64,
        },
        row.get(4)?,
    ))
}

fn decode((mut upload, attrs): (Upload, String)) -> Result<Upload, DbError> {
    upload.attrs = serde_json::from_str(&attrs)?;
    Ok(upload)
}

const COLUMNS: &str = "id, namespace, name, replicas, attrs, created_ms";

impl Db {
    /// Records a new upload (durably: its parts will be acknowledged against it).
    pub fn create_upload(&self, upload: &Upload) -> Result<(), DbError> {
        self.conn().execute(
            &format!("INSERT INTO uploads ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                upload.id,
                upload.bucket,
                upload.key,
                upload.replicas,
                serde_json::to_string(&upload.attrs)?,
                upload.created_ms as i64
            ],
        )?;
        Ok(())
    }

    /// One upload.
    pub fn upload(&self, id: &str) -> Result<Option<Upload>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1"))?;
        let row = stmt.query_row(params![id], row_to_upload).optional()?;
        row.map(decode).transpose()
    }

    /// The uploads of a bucket with keys starting with `prefix`, by key then id.
    pub fn uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM uploads WHERE namespace = ?1 ORDER BY name, id"
        ))?;
        let rows = stmt.query_map(params![bucket], row_to_upload)?;
        let mut out = Vec::new();
        for row in rows {
            let upload = decode(row?)?;
            if upload.key.starts_with(prefix) {
                out.push(upload);
            }
        }
        Ok(out)
    }

    /// Forgets an upload.
    pub fn remove_upload(&self, id: &str) -> Result<bool, DbError> {
        let n = self
            .conn()
            .execute("DELETE FROM uploads WHERE id = ?1", params![id])?;
        Ok(n == 1)
    }
}

#[async_trait]
impl UploadStore for SqliteCatalog {
    async fn create_upload(&self, upload: Upload) -> Result<(), engine::CatalogError> {
        Ok(self.db().run(move |db| db.create_upload(&upload)).await?)
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, engine::CatalogError> {
        let id = id.to_string();
        Ok(self.db().run(move |db| db.upload(&id)).await?)
    }

    async fn uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<Upload>, engine::CatalogError> {
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        Ok(self
            .db()
            .run(move |db| db.uploads(&bucket, &prefix))
            .await?)
    }

    async fn remove_upload(&self, id: &str) -> Result<bool, engine::CatalogError> {
        let id = id.to_string();
        Ok(self.db().run(move |db| db.remove_upload(&id)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_survive_a_reopen_and_are_listed_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let db = Db::open(&path).unwrap();
        for (id, key) in [("u2", "b-key"), ("u1", "a-key"), ("u3", "other")] {
            let mut attrs = engine::ContentAttrs::default();
            attrs.metadata.insert("owner".into(), id.into());
            db.create_upload(&Upload {
                id: id.into(),
                bucket: "photos".into(),
                key: key.into(),
                replicas: 3,
                attrs,
                created_ms: 1,
            })
            .unwrap();
        }
        drop(db);
        let db = Db::open(&path).unwrap();
        let ids: Vec<String> = db
            .uploads("photos", "")
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(ids, ["u1", "u2", "u3"]);
        assert_eq!(db.uploads("photos", "b-").unwrap().len(), 1);
        let u2 = db.upload("u2").unwrap().unwrap();
        assert_eq!(
            (u2.replicas, u2.attrs.metadata["owner"].as_str()),
            (3, "u2")
        );
        assert!(db.remove_upload("u2").unwrap());
        assert!(!db.remove_upload("u2").unwrap());
        assert!(db.upload("u2").unwrap().is_none());
    }
}
