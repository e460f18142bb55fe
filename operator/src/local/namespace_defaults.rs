//! Namespace defaults in local mode: the lifecycle a namespace gives its files that have none
//! of their own, kept in the `buckets` table's `lifecycle` column (a namespace with a default
//! is a declared bucket of the S3 API) and in memory, since the engine asks at every
//! reconcile. Setting or removing it queues every file of the namespace, so that each one's
//! next transition is computed again at once.

use std::collections::HashMap;
use std::sync::RwLock;

use deposito_api::lifecycle::Lifecycle;
use deposito_api::FileKey;
use rusqlite::params;

use super::db::{Db, DbError};

/// The defaults by namespace, as the database holds them.
#[derive(Default)]
pub struct NamespaceDefaults(RwLock<HashMap<String, Lifecycle>>);

impl NamespaceDefaults {
    /// Loads every default from `db` (a stored spec that no longer parses is skipped).
    pub fn load(db: &Db) -> Result<Self, DbError> {
        let conn = db.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT namespace, lifecycle FROM buckets WHERE lifecycle IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut map = HashMap::new();
        for row in rows {
            let (namespace, spec) = row?;
            match Lifecycle::parse(&spec) {
                Ok(lifecycle) => {
                    map.insert(namespace, lifecycle);
                }
                Err(err) => {
                    tracing::warn!(%namespace, %err, "skipping a stored namespace lifecycle");
                }
            }
        }
        Ok(Self(RwLock::new(map)))
    }

    /// The default of `namespace`.
    pub fn get(&self, namespace: &str) -> Option<Lifecycle> {
        self.0
            .read()
            .expect("namespace defaults")
            .get(namespace)
            .cloned()
    }

    /// Forgets the default of `namespace` (its row is gone: DeleteBucket).
    pub fn forget(&self, namespace: &str) {
        self.0
            .write()
            .expect("namespace defaults")
            .remove(namespace);
    }

    /// Records `lifecycle` (None: removes it) for `namespace` in `db`, then in memory;
    /// returns the namespace's files, to be looked at again.
    pub fn set(
        &self,
        db: &Db,
        namespace: &str,
        lifecycle: Option<Lifecycle>,
    ) -> Result<Vec<FileKey>, DbError> {
        let spec = lifecycle.as_ref().map(ToString::to_string);
        let keys = {
            let mut conn = db.conn();
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO buckets (namespace, created_ms, lifecycle) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace) DO UPDATE SET lifecycle = excluded.lifecycle",
                params![namespace, crate::engine::now_ms() as i64, spec],
            )?;
            let keys = {
                let mut stmt = tx.prepare_cached(
                    "SELECT name FROM files WHERE namespace = ?1 AND deleting = 0",
                )?;
                let names = stmt.query_map(params![namespace], |row| row.get::<_, String>(0))?;
                names
                    .map(|n| {
                        Ok(FileKey {
                            namespace: namespace.to_string(),
                            name: n?,
                        })
                    })
                    .collect::<Result<Vec<_>, DbError>>()?
            };
            tx.commit()?;
            keys
        };
        let mut map = self.0.write().expect("namespace defaults");
        match lifecycle {
            Some(l) => map.insert(namespace.to_string(), l),
            None => map.remove(namespace),
        };
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Deposit;

    #[test]
    fn a_default_is_kept_across_a_reopen_names_the_namespaces_files_and_can_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite3");
        let spec = Lifecycle::parse("1@7d,expire@30d").unwrap();
        {
            let db = Db::open(&path).unwrap();
            for (ns, name) in [("logs", "a"), ("logs", "b"), ("other", "c")] {
                let key = FileKey::new(ns, name).unwrap();
                db.put_content(&Deposit::of_key(&key, 2, "aa", 1, "r1"))
                    .unwrap();
            }
            let defaults = NamespaceDefaults::load(&db).unwrap();
            let mut keys = defaults.set(&db, "logs", Some(spec.clone())).unwrap();
            keys.sort_by(|x, y| x.name.cmp(&y.name));
            let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
            assert_eq!(names, ["a", "b"]);
            assert_eq!(defaults.get("logs"), Some(spec.clone()));
            assert_eq!(defaults.get("other"), None);
        }
        let db = Db::open(&path).unwrap();
        let defaults = NamespaceDefaults::load(&db).unwrap();
        assert_eq!(defaults.get("logs"), Some(spec));
        defaults.set(&db, "logs", None).unwrap();
        assert_eq!(defaults.get("logs"), None);
        assert_eq!(NamespaceDefaults::load(&db).unwrap().get("logs"), None);
    }
}
