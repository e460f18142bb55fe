//! Unit tests of the kube controller against kube's mock service (tower-test), in the manner
//! of controller-rs's `ApiServerVerifier`: each scenario answers the requests the controller
//! must make, in order, and fails on any other. The engine behind it is real; membership is a
//! fake (one layer mocked), so no replica is involved.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use deposito_util::worker::Workers;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::cached::CachedFile;
use super::catalog::KubeCatalog;
use super::controller::{self, Context};
use super::crd::{FileSource, StoredFile, StoredFileSpec, FINALIZER};
use crate::engine::{
    self, observer::ObserverSettings, EngineSettings, MembershipError, StaleGuard, TrackerSettings,
};
use crate::metrics::Metrics;
use crate::testing::FakeMembership;

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Plays the API server: checks each request the controller sends and answers it.
struct ApiServerVerifier(ApiServerHandle);

impl ApiServerVerifier {
    /// The next request: its method, path and query, and JSON body.
    async fn next(
        &mut self,
    ) -> (
        String,
        String,
        Value,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the controller made a request")
            .expect("service not closed");
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (method, uri, body, send)
    }

    async fn expect(&mut self, method: &str, path_starts: &str, answer: Value) -> Value {
        let (m, uri, body, send) = self.next().await;
        assert_eq!(m, method, "{uri}");
        assert!(
            uri.starts_with(path_starts),
            "{m} {uri}, wanted {path_starts}"
        );
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        body
    }

    /// No request arrives within a short while.
    async fn expect_silence(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(300), self.0.next_request()).await;
        assert!(
            next.is_err(),
            "unexpected request {:?}",
            next.map(|r| r.map(|(req, _)| req.uri().clone()))
        );
    }
}

const SF_PATH: &str = "/apis/deposito.io/v1alpha1/namespaces/dep/storedfiles";

fn storedfile(name: &str, spec: StoredFileSpec) -> StoredFile {
    let mut sf = StoredFile::new(name, spec);
    sf.metadata.namespace = Some("dep".into());
    sf.metadata.generation = Some(1);
    sf.metadata.uid = Some(format!("uid-{name}"));
    sf
}

fn inline(text: &str, sha: Option<&str>) -> StoredFileSpec {
    StoredFileSpec {
        replicas: 2,
        file_name: None,
        source: FileSource {
            inline: Some(text.into()),
            ..FileSource::default()
        },
        sha256: sha.map(str::to_string),
        lifecycle: None,
        retain_until: None,
    }
}

struct Rig {
    server: ApiServerVerifier,
    context: Arc<Context>,
    writer: Writer<CachedFile>,
    membership: Arc<FakeMembership>,
    _workers: Workers,
}

impl Rig {
    async fn new() -> Rig {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "dep");
        let (reader, writer) = reflector::store();
        let catalog = Arc::new(KubeCatalog::new(client.clone(), reader, Some("dep".into())));
        let membership = Arc::new(FakeMembership::default());
        let metrics = Arc::new(Metrics::default());
        let recorder = Recorder::new(client.clone(), Reporter::from("deposito-operator"));
        let built = engine::build(
            engine::Seams {
                catalog: catalog.clone(),
                membership: membership.clone(),
                events: Arc::new(controller::KubeEvents {
                    recorder: recorder.clone(),
                    catalog: catalog.clone(),
                    metrics: metrics.clone(),
                }),
            },
            crate::replica_client::ReplicaClient::new("t".into()),
            metrics.clone(),
            EngineSettings {
                grace_period: Duration::from_secs(60),
                orphan_grace: Duration::from_secs(60),
                stale_guard: StaleGuard::Age(Duration::from_secs(60)),
                pulls_per_replica: 1,
            },
            TrackerSettings {
                tick: Duration::from_millis(10),
                grace: Duration::from_secs(60),
                observer: ObserverSettings {
                    poll_wait: Duration::from_secs(1),
                    relist_every: Duration::from_secs(60),
                    read_info: false,
                },
            },
            engine::RebalanceSettings {
                enabled: false,
                ..engine::RebalanceSettings::default()
            },
        );
        let workers = Workers::new(CancellationToken::new(), metrics.workers.clone());
        let replicas = built.replicas.clone();
        workers.spawn(built.tracker.into_worker(&workers));
        for _ in 0..100 {
            if replicas.current().error.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let context = Arc::new(Context::new(
            built.engine,
            client,
            recorder,
            catalog,
            metrics,
        ));
        Rig {
            server: ApiServerVerifier(handle),
            context,
            writer,
            membership,
            _workers: workers,
        }
    }

    /// Puts `sf` in the reflector cache, as the watch would.
    fn cache(&mut self, sf: &StoredFile) {
        self.writer
            .apply_watcher_event(&watcher::Event::Apply(CachedFile::from(sf.clone())));
    }

    fn reconcile(
        &self,
        sf: &StoredFile,
    ) -> tokio::task::JoinHandle<Result<kube::runtime::controller::Action, controller::Error>> {
        tokio::spawn(controller::reconcile(
            Arc::new(CachedFile::from(sf.clone())),
            self.context.clone(),
        ))
    }
}

#[tokio::test]
async fn a_new_storedfile_first_gets_the_finalizer_and_nothing_else() {
    let mut rig = Rig::new().await;
    let sf = storedfile("hello.txt", inline("hi", None));
    rig.cache(&sf);
    let run = rig.reconcile(&sf);
    let mut finalized = sf.clone();
    finalized.finalizers_mut().push(FINALIZER.into());
    let patch = rig
        .server
        .expect(
            "PATCH",
            &format!("{SF_PATH}/hello.txt"),
            serde_json::to_value(&finalized).unwrap(),
        )
        .await;
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    );
    run.await.unwrap().expect("reconcile ok");
    rig.server.expect_silence().await;
}

#[tokio::test]
async fn a_deleted_storedfile_without_copies_releases_its_finalizer() {
    let mut rig = Rig::new().await;
    let mut sf = storedfile("gone.txt", inline("bye", None));
    sf.finalizers_mut().push(FINALIZER.into());
    sf.meta_mut().deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-23T12:00:00Z".parse().unwrap(),
    ));
    rig.cache(&sf);
    let run = rig.reconcile(&sf);
    let patch = rig
        .server
        .expect(
            "PATCH",
            &format!("{SF_PATH}/gone.txt"),
            serde_json::to_value(&sf).unwrap(),
        )
        .await;
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    run.await.unwrap().expect("reconcile ok");
}

#[tokio::test]
async fn an_invalid_spec_is_reported_in_status_and_an_event_and_fails() {
    let mut rig = Rig::new().await;
    let mut sf = storedfile("bad.txt", inline("hi", Some(&"0".repeat(64))));
    sf.finalizers_mut().push(FINALIZER.into());
    rig.cache(&sf);
    let run = rig.reconcile(&sf);
    let status = rig
        .server
        .expect(
            "PATCH",
            &format!("{SF_PATH}/bad.txt/status"),
            serde_json::to_value(&sf).unwrap(),
        )
        .await;
    assert_eq!(status["status"]["phase"], "Failed");
    let failed = &status["status"]["conditions"][1];
    assert_eq!(
        (failed["type"].as_str(), failed["reason"].as_str()),
        (Some("Failed"), Some("InvalidSpec"))
    );
    assert!(failed["message"]
        .as_str()
        .unwrap()
        .contains("does not match the inline content"));
    let event = rig
        .server
        .expect(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/dep/events",
            json!({}),
        )
        .await;
    assert_eq!(
        (event["reason"].as_str(), event["type"].as_str()),
        (Some("Failed"), Some("Warning"))
    );
    assert_eq!(event["regarding"]["name"], "bad.txt");
    let err = run.await.unwrap().expect_err("an invalid spec fails");
    assert_eq!(err.category(), crate::engine::ErrorCategory::Invalid);
}

#[tokio::test]
async fn without_pod_access_the_file_reports_forbidden_and_nothing_is_planned() {
    let mut rig = Rig::new().await;
    *rig.membership.error.lock().unwrap() = Some(MembershipError::Forbidden(
        "pods is forbidden: cannot list".into(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut sf = storedfile("blind.txt", inline("hi", None));
    sf.finalizers_mut().push(FINALIZER.into());
    rig.cache(&sf);
    let run = rig.reconcile(&sf);
    let status = rig
        .server
        .expect(
            "PATCH",
            &format!("{SF_PATH}/blind.txt/status"),
            serde_json::to_value(&sf).unwrap(),
        )
        .await;
    assert_eq!(status["status"]["conditions"][0]["reason"], "Forbidden");
    let event = rig
        .server
        .expect(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/dep/events",
            json!({}),
        )
        .await;
    assert!(event["note"].as_str().unwrap().contains("forbidden"));
    let err = run.await.unwrap().expect_err("forbidden fails");
    assert_eq!(err.category(), crate::engine::ErrorCategory::Forbidden);
    // The same problem again: the status already says so, no second write or event.
    let mut reported = sf.clone();
    reported.status = serde_json::from_value(status["status"].clone()).unwrap();
    rig.cache(&reported);
    let again = rig.reconcile(&reported);
    assert!(again.await.unwrap().is_err());
    rig.server.expect_silence().await;
}

/// The `resync` worker sends every cached StoredFile to the controller once per pass, 200
/// at a time, the batches spread over the period, and starts the next pass a period after
/// the last one started.
#[tokio::test]
async fn the_resync_sends_every_storedfile_once_per_pass_in_spread_batches() {
    use deposito_util::worker::{Next, Worker};
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "dep");
    let (reader, mut writer) = reflector::store();
    let catalog = Arc::new(KubeCatalog::new(client, reader, Some("dep".into())));
    for i in 0..450 {
        let sf = CachedFile::from(storedfile(&format!("f-{i:03}"), inline("x", None)));
        writer.apply_watcher_event(&watcher::Event::Apply(sf.clone()));
        catalog.watch_event(&Ok(watcher::Event::Apply(sf)));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let every = Duration::from_secs(30);
    let mut resync = super::workers::Resync::new(catalog, tx, every);
    assert_eq!(resync.first_step_after(), every);
    let mut passes = Vec::new();
    for _ in 0..2 {
        let mut seen = Vec::new();
        for batch in 0..3 {
            let next = resync.step().await.unwrap();
            let mut got = 0;
            while let Ok(oref) = rx.try_recv() {
                assert_eq!(oref.namespace.as_deref(), Some("dep"));
                seen.push(oref.name);
                got += 1;
            }
            assert_eq!(got, if batch < 2 { 200 } else { 50 });
            match next {
                Next::After(pause) if batch < 2 => assert_eq!(pause, every / 3),
                Next::After(rest) => assert!(rest <= every && rest > every / 2, "{rest:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        passes.push(seen);
    }
    let names: std::collections::BTreeSet<_> = passes[0].iter().cloned().collect();
    assert_eq!((passes[0].len(), names.len()), (450, 450), "each file once");
    assert_eq!(
        passes[1], passes[0],
        "the next pass visits them again, in the same order"
    );
}
