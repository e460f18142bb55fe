//! The gateway's index of StoredFiles by file name, kept from the watch's events: a lookup of
//! a file name (even one no StoredFile has) and a page of a namespace's list in name order
//! cost a tree walk, not a scan and sort of the whole cache.
//!
//! A StoredFile's file name is `spec.fileName`, else its `metadata.name`; the index maps
//! `(namespace, file name)` to the resource names carrying it (two resources may claim one
//! file name by hand; the gateway then reads the one the documented mapping gives first).
//! A re-list builds a fresh index beside the live one and swaps it in when the list ends, as
//! the reflector's store does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// One namespace's file names, in order, each with the resources that carry it.
type Names = BTreeMap<String, BTreeSet<String>>;

#[derive(Default)]
struct Index {
    by_file: HashMap<String, Names>,
    /// `(namespace, resource name)` → its file name, to move an entry when it changes.
    by_resource: HashMap<(String, String), String>,
}

impl Index {
    fn upsert(&mut self, namespace: &str, resource: &str, file_name: &str) {
        let key = (namespace.to_string(), resource.to_string());
        if let Some(old) = self.by_resource.get(&key) {
            if old == file_name {
                return;
            }
            let old = old.clone();
            self.remove_entry(namespace, resource, &old);
        }
        self.by_file
            .entry(namespace.to_string())
            .or_default()
            .entry(file_name.to_string())
            .or_default()
            .insert(resource.to_string());
        self.by_resource.insert(key, file_name.to_string());
    }

    fn remove(&mut self, namespace: &str, resource: &str) {
        let key = (namespace.to_string(), resource.to_string());
        if let Some(old) = self.by_resource.remove(&key) {
            self.remove_entry(namespace, resource, &old);
        }
    }

    fn remove_entry(&mut self, namespace: &str, resource: &str, file_name: &str) {
        let Some(names) = self.by_file.get_mut(namespace) else {
            return;
        };
        if let Some(resources) = names.get_mut(file_name) {
            resources.remove(resource);
            if resources.is_empty() {
                names.remove(file_name);
            }
        }
        if names.is_empty() {
            self.by_file.remove(namespace);
        }
    }
}

/// The live index and, during a re-list, the one being built.
#[derive(Default)]
pub struct FileIndex {
    live: Mutex<Index>,
    building: Mutex<Option<Index>>,
}

impl FileIndex {
    fn live(&self) -> std::sync::MutexGuard<'_, Index> {
        self.live.lock().expect("file index lock")
    }

    fn building(&self) -> std::sync::MutexGuard<'_, Option<Index>> {
        self.building.lock().expect("file index rebuild lock")
    }

    /// A StoredFile was added or changed (outside a re-list).
    pub fn upsert(&self, namespace: &str, resource: &str, file_name: &str) {
        self.live().upsert(namespace, resource, file_name);
    }

    /// A StoredFile is gone.
    pub fn remove(&self, namespace: &str, resource: &str) {
        self.live().remove(namespace, resource);
    }

    /// A re-list starts: the live index keeps answering until it ends.
    pub fn relist_started(&self) {
        *self.building() = Some(Index::default());
    }

    /// One StoredFile of the re-list.
    pub fn relisted(&self, namespace: &str, resource: &str, file_name: &str) {
        match self.building().as_mut() {
            Some(index) => index.upsert(namespace, resource, file_name),
            None => self.upsert(namespace, resource, file_name),
        }
    }

    /// The re-list is complete: its index replaces the live one.
    pub fn relist_done(&self) {
        if let Some(index) = self.building().take() {
            *self.live() = index;
        }
    }

    /// The resources carrying `file_name` in `namespace`, in name order.
    pub fn resources(&self, namespace: &str, file_name: &str) -> Vec<String> {
        self.live()
            .by_file
            .get(namespace)
            .and_then(|names| names.get(file_name))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Up to `limit` file names of `namespace` after `after`, in order, each with the first
    /// resource carrying it; and whether more follow.
    pub fn page(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(String, String)>, bool) {
        let live = self.live();
        let Some(names) = live.by_file.get(namespace) else {
            return (Vec::new(), false);
        };
        let range = match after {
            Some(a) => {
                names.range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            }
            None => names.range::<str, _>(..),
        };
        let mut page: Vec<(String, String)> = range
            .take(limit.saturating_add(1))
            .filter_map(|(name, resources)| Some((name.clone(), resources.first()?.clone())))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// How many file names are indexed (all namespaces).
    pub fn len(&self) -> usize {
        self.live().by_resource.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_pages_renames_and_relists() {
        let index = FileIndex::default();
        for (res, file) in [("c", "c.txt"), ("a", "a.txt"), ("b", "b.txt")] {
            index.upsert("dep", res, file);
        }
        index.upsert("other", "z", "a.txt");
        assert_eq!(index.resources("dep", "a.txt"), vec!["a".to_string()]);
        assert!(index.resources("dep", "nope").is_empty());
        let (page, more) = index.page("dep", None, 2);
        assert_eq!(
            page,
            vec![
                ("a.txt".to_string(), "a".to_string()),
                ("b.txt".to_string(), "b".to_string())
            ]
        );
        assert!(more);
        let (page, more) = index.page("dep", Some("b.txt"), 2);
        assert_eq!(page, vec![("c.txt".to_string(), "c".to_string())]);
        assert!(!more);

        // A changed file name moves its entry; a second resource with one name is kept too.
        index.upsert("dep", "c", "renamed.txt");
        assert!(index.resources("dep", "c.txt").is_empty());
        index.upsert("dep", "a2", "a.txt");
        assert_eq!(index.resources("dep", "a.txt"), vec!["a", "a2"]);
        index.remove("dep", "a");
        assert_eq!(index.resources("dep", "a.txt"), vec!["a2"]);

        // A re-list: the old index answers until it ends; then only what was listed stays.
        index.relist_started();
        index.relisted("dep", "b", "b.txt");
        assert_eq!(index.resources("dep", "renamed.txt"), vec!["c"]);
        index.relist_done();
        assert!(index.resources("dep", "renamed.txt").is_empty());
        assert_eq!(index.resources("dep", "b.txt"), vec!["b"]);
        assert_eq!(index.len(), 1);
        assert!(index.page("other", None, 10).0.is_empty());
    }
}
