//! Bytes kube mode's StoredFile cache keeps per file, counted by a global allocator that
//! tracks every allocation and release of this test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

// Allocations counted, bytes as requested (the allocator's own overhead not included).

struct Counting;
static BYTES: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn object(i: usize) -> serde_json::Value {
    serde_json::json!({
      "apiVersion": "deposito.io/v1alpha1", "kind": "StoredFile",
      "metadata": {
        "name": format!("bench-{i:06}"), "namespace": "deposito-bench",
        "uid": "0d6b1c5e-6a2f-4d7e-9a59-3c1f0f7b8e21", "resourceVersion": format!("{}", 100000 + i),
        "generation": 1, "creationTimestamp": "2026-12-03T10:00:00Z",
        "finalizers": ["deposito.io/copies"],
        "managedFields": [{"manager": "x", "operation": "Update", "apiVersion": "deposito.io/v1alpha1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
      },
      "spec": {"replicas": 2, "source": {"inline": format!("file {i} of the kube scale benchmark")}},
      "status": {
        "phase": "Ready", "observedGeneration": 1,
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "size": 37, "displaySize": "37 B", "readyReplicas": 2,
        "holders": ["deposito-replica-0", "deposito-replica-2"],
        "sourceRevision": "0123456789abcdef",
        "conditions": [
          {"type": "Ready", "status": "True", "observedGeneration": 1, "lastTransitionTime": "2026-12-03T10:00:01Z", "reason": "Converged", "message": "2 of 2 verified copies"},
          {"type": "Degraded", "status": "False", "observedGeneration": 1, "lastTransitionTime": "2026-12-03T10:00:01Z", "reason": "AsWanted", "message": ""}
        ]
      }
    })
}

/// What the operator's StoredFile cache holds per file (the reflector's store with its keys,
/// and the gateway's file-name index), counted by this test's allocator: the figure behind
/// the operator's memory at 100,000 StoredFiles (BENCHMARKS.md). A regression guard: the
/// typed, slimmed object took about 1,700 bytes in the store alone.
#[tokio::test]
async fn the_storedfile_cache_keeps_under_1_500_bytes_per_file() {
    use deposito_operator::kube::cached::CachedFile;
    use deposito_operator::kube::catalog::KubeCatalog;
    use http::{Request, Response};
    use kube::client::Body;
    use kube::runtime::{reflector, watcher};
    const N: usize = 20_000;
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "deposito-bench");
    let (reader, mut writer) = reflector::store::<CachedFile>();
    let catalog = KubeCatalog::new(client, reader.clone(), None);
    let before = (BYTES.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed));
    for i in 0..N {
        let file: CachedFile = serde_json::from_value(object(i)).unwrap();
        writer.apply_watcher_event(&watcher::Event::Apply(file.clone()));
        catalog.watch_event(&Ok(watcher::Event::Apply(file)));
    }
    let after = (BYTES.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed));
    let bytes = (after.0 - before.0) / N as isize;
    let allocations = (after.1 - before.1) as f64 / N as f64;
    println!("{bytes} bytes and {allocations:.1} allocations per StoredFile");
    assert_eq!(reader.state().len(), N);
    assert_eq!(catalog.file_count(), N);
    assert!(bytes < 1_500, "{bytes} bytes per StoredFile");
}
