//! `deposito-operator drain-before-scale-down`: the chart's pre-upgrade hook. When an upgrade
//! lowers the replica StatefulSet's size, the pods that will go (the highest ordinals) are
//! marked draining (`deposito.io/drain=true`), and the hook waits, reading StoredFile statuses
//! through the API server, until no file that those pods hold would fall below its
//! replication level without them. On timeout it removes the marks it set and fails, so
//! `helm upgrade` stops before any pod is removed.
//!
//! A file is safe when its holders outside the leaving pods number at least
//! `min(spec.replicas, pods that stay)`; a file with no copy on a leaving pod is never waited
//! for. `kubectl scale` of the StatefulSet bypasses all of this.

use crate::config::ScaleDownArgs;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::crd::StoredFile;
use super::membership::DRAIN_ANNOTATION;

/// Files that still need copies off the leaving pods, for the progress lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Blocking {
    pub files: usize,
    pub examples: Vec<String>,
}

/// Which files would fall below their level without `leaving` (pure; unit tested).
pub fn blocking(files: &[StoredFile], leaving: &BTreeSet<String>, staying: u32) -> Blocking {
    let mut out = Blocking::default();
    for sf in files {
        if sf.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let holders = sf
            .status
            .as_ref()
            .map(|s| s.holders.clone())
            .unwrap_or_default();
        if !holders.iter().any(|h| leaving.contains(h)) {
            continue;
        }
        let kept = holders.iter().filter(|h| !leaving.contains(*h)).count();
        let need = (sf.spec.replicas.max(1) as usize).min(staying as usize);
        if kept < need {
            out.files += 1;
            if out.examples.len() < 5 {
                out.examples.push(format!(
                    "{}/{} ({kept} of {need} copies elsewhere)",
                    sf.namespace().unwrap_or_default(),
                    sf.name_any()
                ));
            }
        }
    }
    out
}

async fn list_files(api: &Api<StoredFile>) -> anyhow::Result<Vec<StoredFile>> {
    let mut files = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.context("listing StoredFiles")?;
        files.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(files),
        }
    }
}

async fn mark(pods: &Api<Pod>, name: &str, draining: bool) -> anyhow::Result<()> {
    let value = draining.then_some("true");
    let patch = serde_json::json!({ "metadata": { "annotations": { DRAIN_ANNOTATION: value } } });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating pod {name}"))?;
    Ok(())
}

/// Runs the hook; an error exits non-zero and stops the upgrade.
pub async fn run(args: ScaleDownArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration")?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let Some(set) = sets
        .get_opt(&args.statefulset)
        .await
        .context("reading the replica StatefulSet")?
    else {
        info!(statefulset = %args.statefulset, "no replica StatefulSet yet: nothing to drain");
        return Ok(());
    };
    let current = set.spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
    if args.replicas >= current {
        info!(
            current,
            wanted = args.replicas,
            "not a scale-down: nothing to drain"
        );
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut leaving = BTreeSet::new();
    for ordinal in args.replicas..current {
        let name = format!("{}-{ordinal}", args.statefulset);
        if pods.get_opt(&name).await?.is_some() {
            mark(&pods, &name, true).await?;
        }
        leaving.insert(name);
    }
    info!(
        ?leaving,
        from = current,
        to = args.replicas,
        "draining the replica pods that will go"
    );
    let files: Api<StoredFile> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &namespace)
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let left = blocking(&list_files(&files).await?, &leaving, args.replicas);
        if left.files == 0 {
            info!(
                ?leaving,
                "drained: every file keeps its copies on the pods that stay"
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            for name in &leaving {
                if let Err(err) = mark(&pods, name, false).await {
                    warn!(pod = %name, %err, "could not clear the drain mark");
                }
            }
            anyhow::bail!(
                "timed out after {} s: {} file(s) would fall below their replication level \
                 without pods {:?} (e.g. {}); the upgrade stops, the drain marks are removed \
                 and no pod was removed. Add replicas or storage, or raise \
                 replica.scaleDown.timeoutSeconds",
                args.timeout_secs,
                left.files,
                leaving,
                left.examples.join(", ")
            );
        }
        info!(files = left.files, examples = ?left.examples, "waiting for copies to move off the leaving pods");
        tokio::time::sleep(Duration::from_secs(args.poll_secs.max(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::crd::{FileSource, StoredFileSpec, StoredFileStatus};

    fn file(name: &str, replicas: i32, holders: &[&str]) -> StoredFile {
        let mut sf = StoredFile::new(
            name,
            StoredFileSpec {
                replicas,
                file_name: None,
                source: FileSource {
                    inline: Some("x".into()),
                    ..FileSource::default()
                },
                sha256: None,
                lifecycle: None,
                retain_until: None,
            },
        );
        sf.metadata.namespace = Some("dep".into());
        sf.status = Some(StoredFileStatus {
            holders: holders.iter().map(ToString::to_string).collect(),
            ..StoredFileStatus::default()
        });
        sf
    }

    #[test]
    fn only_files_that_would_fall_below_their_level_block() {
        let leaving: BTreeSet<String> = ["r-3".to_string()].into();
        let files = [
            file("only-on-leaving", 1, &["r-3"]),
            file("moved", 1, &["r-0"]),
            file("two-one-leaving", 2, &["r-1", "r-3"]),
            file("two-copied", 2, &["r-1", "r-2", "r-3"]),
            file("wants-five", 5, &["r-0", "r-1", "r-2", "r-3"]),
            file("no-copy", 2, &[]),
        ];
        let b = blocking(&files, &leaving, 3);
        assert_eq!(b.files, 2, "{:?}", b.examples);
        assert!(b.examples[0].starts_with("dep/only-on-leaving (0 of 1"));
        assert!(b.examples[1].starts_with("dep/two-one-leaving (1 of 2"));
        // At N above what stays, min(N, staying) copies elsewhere are enough.
        assert_eq!(blocking(&files[4..5], &leaving, 3).files, 0);
        assert_eq!(blocking(&files, &BTreeSet::new(), 3).files, 0);
    }
}
