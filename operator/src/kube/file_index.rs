//! The gateway's index of StoredFiles by file name, kept from the watch's events: a lookup of
//! a file name (even one no StoredFile has) and a page of a namespace's list in name order
//! cost a tree walk, not a scan and sort of the whole cache.
//!
//! A StoredFile's file name is `spec.fileName`, else its `metadata.name`; the index maps
//! `(namespace, file name)` to the resource names carrying it (two resources may claim one
//! file name by hand; the gateway then reads the one the documented mapping gives first).
//! A re-list builds a fresh index beside the live one and swaps it in when the list ends, as
//! the reflector's store does.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

/// A StoredFile: its namespace and resource name.
pub type ResourceRef = (String, String);

/// Where a walk goes on: a namespace and the last file name visited there.
pub type WalkCursor = (String, String);

/// The resources carrying one file name, in name order (almost always exactly one).
type Resources = Box<[Box<str>]>;

/// One namespace's file names, in order, each with the resources that carry it.
type Names = BTreeMap<Box<str>, Resources>;

#[derive(Default)]
struct Index {
    by_file: HashMap<String, Names>,
    /// Namespace → resource name → its file name, only where the two differ (most
    /// StoredFiles are named after their file): to move an entry when a file name changes.
    renamed: HashMap<String, HashMap<Box<str>, Box<str>>>,
    /// Resources indexed.
    count: usize,
}

impl Index {
    /// The file name `resource` is indexed under, if it is.
    fn file_name_of(&self, namespace: &str, resource: &str) -> Option<String> {
        let indexed_under = |file_name: &str| {
            self.by_file
                .get(namespace)
                .and_then(|names| names.get(file_name))
                .is_some_and(|r| r.binary_search_by(|n| (**n).cmp(resource)).is_ok())
        };
        match self.renamed.get(namespace).and_then(|m| m.get(resource)) {
            Some(file_name) => indexed_under(file_name).then(|| file_name.to_string()),
            None => indexed_under(resource).then(|| resource.to_string()),
        }
    }

    fn upsert(&mut self, namespace: &str, resource: &str, file_name: &str) {
        match self.file_name_of(namespace, resource) {
            Some(old) if old == file_name => return,
            Some(old) => self.remove_entry(namespace, resource, &old),
            None => {}
        }
        let names = match self.by_file.get_mut(namespace) {
            Some(names) => names,
            None => self.by_file.entry(namespace.to_string()).or_default(),
        };
        let resources = names.entry(file_name.into()).or_default();
        if let Err(at) = resources.binary_search_by(|n| (**n).cmp(resource)) {
            let mut list = std::mem::take(resources).into_vec();
            list.insert(at, resource.into());
            *resources = list.into_boxed_slice();
            self.count += 1;
        }
        let renames = self.renamed.get_mut(namespace);
        if file_name != resource {
            match renames {
                Some(m) => m.insert(resource.into(), file_name.into()),
                None => self
                    .renamed
                    .entry(namespace.to_string())
                    .or_default()
                    .insert(resource.into(), file_name.into()),
            };
        } else if let Some(m) = renames {
            m.remove(resource);
        }
    }

    fn remove(&mut self, namespace: &str, resource: &str) {
        if let Some(old) = self.file_name_of(namespace, resource) {
            self.remove_entry(namespace, resource, &old);
        }
        if let Some(m) = self.renamed.get_mut(namespace) {
            m.remove(resource);
            if m.is_empty() {
                self.renamed.remove(namespace);
            }
        }
    }

    fn remove_entry(&mut self, namespace: &str, resource: &str, file_name: &str) {
        let Some(names) = self.by_file.get_mut(namespace) else {
            return;
        };
        if let Some(resources) = names.get_mut(file_name) {
            if let Ok(at) = resources.binary_search_by(|n| (**n).cmp(resource)) {
                let mut list = std::mem::take(resources).into_vec();
                list.remove(at);
                self.count -= 1;
                if list.is_empty() {
                    names.remove(file_name);
                } else {
                    *resources = list.into_boxed_slice();
                }
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
            .map(|list| list.iter().map(ToString::to_string).collect())
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
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.page_from(namespace, from, limit)
    }

    /// Like [`FileIndex::page`], from the bound `from` (inclusive or not).
    pub fn page_from(
        &self,
        namespace: &str,
        from: Bound<&str>,
        limit: usize,
    ) -> (Vec<(String, String)>, bool) {
        let live = self.live();
        let Some(names) = live.by_file.get(namespace) else {
            return (Vec::new(), false);
        };
        let range = names.range::<str, _>((from, Bound::Unbounded));
        let mut page: Vec<(String, String)> = range
            .take(limit.saturating_add(1))
            .filter_map(|(name, resources)| {
                Some((name.to_string(), resources.first()?.to_string()))
            })
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// The resources of up to `limit` file names after `after` (a namespace and a file name),
    /// in namespace then file-name order, and where the next call goes on (`None` once every
    /// namespace is done): a walk over every StoredFile without a copy of the whole list.
    pub fn walk(
        &self,
        after: Option<&WalkCursor>,
        limit: usize,
    ) -> (Vec<ResourceRef>, Option<WalkCursor>) {
        let live = self.live();
        let mut namespaces: Vec<&String> = live.by_file.keys().collect();
        namespaces.sort();
        let mut out = Vec::new();
        let mut last: Option<(&String, &str)> = None;
        let mut taken = 0;
        for ns in namespaces {
            let names = &live.by_file[ns];
            let range = match after {
                Some((a_ns, _)) if ns < a_ns => continue,
                Some((a_ns, a_name)) if ns == a_ns => names.range::<str, _>((
                    std::ops::Bound::Excluded(a_name.as_str()),
                    std::ops::Bound::Unbounded,
                )),
                _ => names.range::<str, _>(..),
            };
            for (name, resources) in range {
                if taken == limit {
                    let next = last.map(|(ns, name)| (ns.clone(), name.to_string()));
                    return (out, next);
                }
                taken += 1;
                last = Some((ns, name));
                out.extend(resources.iter().map(|r| (ns.clone(), r.to_string())));
            }
        }
        (out, None)
    }

    /// The namespaces holding at least one StoredFile, by name.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self.live().by_file.keys().cloned().collect();
        out.sort();
        out
    }

    /// How many file names are indexed (all namespaces).
    pub fn len(&self) -> usize {
        self.live().count
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

    #[test]
    fn a_walk_visits_every_resource_once_in_order() {
        let index = FileIndex::default();
        for (ns, res, file) in [
            ("b", "r1", "x"),
            ("a", "r2", "y"),
            ("a", "r3", "y"),
            ("a", "r4", "z"),
            ("c", "r5", "w"),
        ] {
            index.upsert(ns, res, file);
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut calls = 0;
        loop {
            let (batch, next) = index.walk(cursor.as_ref(), 1);
            seen.extend(batch);
            calls += 1;
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let names: Vec<&str> = seen.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(names, ["r2", "r3", "r4", "r1", "r5"]);
        assert_eq!(calls, 4, "one file name per call");
        let (all, next) = index.walk(None, 100);
        assert_eq!((all.len(), next), (5, None));
    }
}
