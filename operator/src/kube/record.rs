//! Between a StoredFile and the engine: the record the engine reconciles, and the status it
//! publishes back. Pure functions.

use deposito_api::gateway::{Condition, Phase};
use deposito_api::names::validate_file_name;
use deposito_api::{is_sha256_hex, sha256_hex, FileKey};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::content_attrs::described;
use super::crd::{
    display_size, StoredFile, StoredFileCondition, StoredFileSpec, StoredFileStatus,
    MAX_CONDITION_MESSAGE,
};
use crate::engine::error::PlanError;
use crate::engine::{Aging, FileRecord, ObservedStatus, Source};

/// Fingerprint of what decides the content: the source and `spec.sha256`. When it changes,
/// a digest learned from an earlier `url` no longer applies.
pub fn source_revision(spec: &StoredFileSpec) -> String {
    let canonical = serde_json::json!({ "source": spec.source, "sha256": spec.sha256 });
    sha256_hex(canonical.to_string().as_bytes())[..16].to_string()
}

/// The user's file name of a StoredFile: `spec.fileName`, or `metadata.name`.
pub fn file_name_of(sf: &StoredFile) -> String {
    sf.spec.file_name.clone().unwrap_or_else(|| sf.name_any())
}

fn to_engine(c: &StoredFileCondition) -> Condition {
    Condition {
        type_: c.type_.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
    }
}

/// The engine's conditions as `metav1.Condition`s: a condition whose status is the same as
/// in `previous` keeps its `lastTransitionTime`; others get `now`.
fn conditions_of(
    conditions: &[Condition],
    previous: Option<&StoredFileStatus>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<StoredFileCondition> {
    conditions
        .iter()
        .map(|c| {
            let since = previous
                .into_iter()
                .flat_map(|p| &p.conditions)
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
            let reason = if c.reason.is_empty() {
                "Unknown".to_string()
            } else {
                c.reason.clone()
            };
            StoredFileCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                observed_generation: generation,
                last_transition_time: since,
                reason,
                message: c.message.chars().take(MAX_CONDITION_MESSAGE).collect(),
            }
        })
        .collect()
}

/// Now, as a condition time (whole seconds: the API server keeps no more).
pub fn now() -> Time {
    use k8s_openapi::jiff::Timestamp;
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The engine's record of a StoredFile (the cache keeps it as a
/// [`super::cached::CachedFile`], whose `record()` gives it back). Errors are specs the engine cannot act on.
pub fn record_of(sf: &StoredFile) -> Result<FileRecord, PlanError> {
    let invalid = |msg: String| PlanError::InvalidSpec(msg);
    let namespace = sf.namespace().unwrap_or_default();
    let key = FileKey::new(&namespace, &sf.name_any())
        .map_err(|e| invalid(format!("metadata.name: {e}")))?;
    let file_name = file_name_of(sf);
    validate_file_name(&file_name).map_err(|e| invalid(format!("spec.fileName: {e}")))?;
    if sf.spec.replicas < 1 {
        return Err(invalid("spec.replicas must be at least 1".into()));
    }
    if let Some(sha) = &sf.spec.sha256 {
        if !is_sha256_hex(sha) {
            return Err(invalid(format!(
                "spec.sha256 '{sha}' is not a lowercase hex sha256"
            )));
        }
    }
    let status = sf.status.clone().unwrap_or_default();
    let revision = source_revision(&sf.spec);
    let same_source = status.source_revision.as_deref() == Some(revision.as_str());
    let learned_sha = status.sha256.clone().filter(|_| same_source);
    let learned_size = status.size.filter(|_| same_source).unwrap_or(0).max(0) as u64;
    let s = &sf.spec.source;
    let inline = s
        .inline
        .as_ref()
        .map(|text| (sha256_hex(text.as_bytes()), text.len() as u64));
    let (source, sha256, size) = match (inline, &s.url, &s.upload) {
        (Some((actual, size)), None, None) => {
            if let Some(want) = &sf.spec.sha256 {
                if *want != actual {
                    return Err(invalid(format!(
                        "spec.sha256 {want} does not match the inline content ({actual})"
                    )));
                }
            }
            (Source::Inline, actual, size)
        }
        (None, Some(url), None) => {
            let sha = sf.spec.sha256.clone().or(learned_sha).unwrap_or_default();
            (Source::Url(url.clone()), sha, learned_size)
        }
        (None, None, Some(_)) => {
            let sha = sf
                .spec
                .sha256
                .clone()
                .ok_or_else(|| invalid("an upload source needs spec.sha256".into()))?;
            (Source::Upload, sha, learned_size)
        }
        _ => {
            return Err(invalid(
                "exactly one of source.inline, source.url and source.upload must be set".into(),
            ))
        }
    };
    let aging = aging_of(sf, &sha256, &status).map_err(invalid)?;
    Ok(FileRecord {
        key,
        file_name,
        replicas: sf.spec.replicas as u32,
        sha256,
        size,
        generation: sf.metadata.generation.unwrap_or(0).max(0) as u64,
        deleting: sf.metadata.deletion_timestamp.is_some(),
        source,
        status: observed_of(&status),
        aging,
    })
}

/// Milliseconds since the Unix epoch of a Kubernetes time.
pub fn time_ms(time: &Time) -> u64 {
    u64::try_from(time.0.as_millisecond()).unwrap_or(0)
}

/// A Kubernetes time (whole seconds) of milliseconds since the Unix epoch.
pub fn time_of(ms: u64) -> Time {
    use k8s_openapi::jiff::Timestamp;
    Time(Timestamp::from_second((ms / 1000) as i64).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// What a StoredFile's age decides: its lifecycle and lock from the spec, and age 0 of
/// content `sha256`: when the gateway acknowledged it ([`super::content_attrs`]), else when
/// the status first saw it verified (`status.contentSince`), else unknown (0).
fn aging_of(sf: &StoredFile, sha256: &str, status: &StoredFileStatus) -> Result<Aging, String> {
    let lifecycle = sf
        .spec
        .lifecycle
        .as_ref()
        .map(|l| {
            l.to_lifecycle()
                .map_err(|why| format!("spec.lifecycle: {why}"))
        })
        .transpose()?;
    let deposited = described(sf.metadata.annotations.as_ref(), Some(sha256))
        .map_or(0, |d| d.attrs.modified_ms);
    let seen = status
        .content_since
        .as_ref()
        .filter(|_| !sha256.is_empty() && status.sha256.as_deref() == Some(sha256))
        .map_or(0, time_ms);
    Ok(Aging {
        lifecycle,
        acked_ms: if deposited > 0 { deposited } else { seen },
        retain_until_ms: sf.spec.retain_until.as_ref().map(time_ms),
    })
}

/// What a StoredFile's status tells the engine.
pub fn observed_of(status: &StoredFileStatus) -> ObservedStatus {
    ObservedStatus {
        phase: status
            .phase
            .as_deref()
            .and_then(Phase::parse)
            .unwrap_or(Phase::Pending),
        ready_replicas: status.ready_replicas.max(0) as u32,
        holders: status.holders.clone(),
        unreachable_holders: status.unreachable_holders.clone(),
        observed_generation: status.observed_generation.unwrap_or(0).max(0) as u64,
        conditions: status.conditions.iter().map(to_engine).collect(),
        lifecycle_step: status.lifecycle_step.unwrap_or(0).max(0) as u32,
    }
}

/// The status resource for what the engine decided about `record` (a record made from a
/// spec whose [`source_revision`] is `revision`); `previous` is the status the object has
/// now (condition times carry over).
pub fn status_of(
    record: &FileRecord,
    revision: &str,
    status: &ObservedStatus,
    previous: Option<&StoredFileStatus>,
    now: &Time,
) -> StoredFileStatus {
    let generation = Some(status.observed_generation as i64);
    let known = !record.sha256.is_empty();
    StoredFileStatus {
        phase: Some(status.phase.as_str().to_string()),
        observed_generation: generation,
        sha256: known.then(|| record.sha256.clone()),
        size: (known && record.size > 0).then_some(record.size as i64),
        display_size: (known && record.size > 0).then(|| display_size(record.size)),
        ready_replicas: status.ready_replicas as i32,
        holders: status.holders.clone(),
        unreachable_holders: status.unreachable_holders.clone(),
        source_revision: known.then(|| revision.to_string()),
        conditions: conditions_of(&status.conditions, previous, generation, now),
        ..aging_status(record, status, now)
    }
}

/// The status fields of a file's age: `contentSince` once the content is known and
/// verified; the level in force, the step, the next transition and the expiry with a
/// lifecycle; `retainedUntil` while the lock holds. `record.replicas` is the level in force
/// (the engine's reconcile set it).
fn aging_status(record: &FileRecord, status: &ObservedStatus, now: &Time) -> StoredFileStatus {
    let now_ms = time_ms(now);
    let aging = &record.aging;
    // Age 0 is learned here for content that did not come through the gateway: the first
    // status that counts a verified copy of it.
    let acked_ms = match aging.acked_ms {
        0 if !record.sha256.is_empty() && status.ready_replicas > 0 => now_ms,
        ms => ms,
    };
    let since = (acked_ms > 0).then(|| time_of(acked_ms));
    let mut out = StoredFileStatus {
        content_since: since,
        retained_until: record.retained_at(now_ms).map(time_of),
        ..StoredFileStatus::default()
    };
    if let Some(lifecycle) = &aging.lifecycle {
        let known = acked_ms > 0;
        out.replicas_in_force = Some(record.replicas as i32);
        out.lifecycle_step = Some(status.lifecycle_step as i32);
        out.next_transition = known
            .then(|| lifecycle.in_force(record.replicas, acked_ms, now_ms).1)
            .flatten()
            .map(time_of);
        out.expires = known
            .then(|| lifecycle.expires_ms(acked_ms))
            .flatten()
            .map(time_of);
    }
    out
}

/// A status that only reports a problem the engine could not get past (an invalid spec, a
/// forbidden read), keeping what the last status said about copies.
pub fn problem_status(
    previous: Option<StoredFileStatus>,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &Time,
) -> StoredFileStatus {
    let mut status = previous.clone().unwrap_or_default();
    status.observed_generation = generation;
    if reason == "InvalidSpec" || status.phase.is_none() {
        let phase = if reason == "InvalidSpec" {
            "Failed"
        } else {
            "Pending"
        };
        status.phase = Some(phase.to_string());
    }
    let condition = |type_: &str, status: &str| Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
    };
    status.conditions = conditions_of(
        &[condition("Ready", "False"), condition("Failed", "True")],
        previous.as_ref(),
        generation,
        now,
    );
    status
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kube::crd::{FileSource, UploadSource};

    pub(crate) fn sf(name: &str, source: FileSource, sha: Option<&str>) -> StoredFile {
        let mut sf = StoredFile::new(
            name,
            StoredFileSpec {
                replicas: 2,
                file_name: None,
                source,
                sha256: sha.map(str::to_string),
                lifecycle: None,
                retain_until: None,
            },
        );
        sf.metadata.namespace = Some("dep".into());
        sf.metadata.generation = Some(3);
        sf
    }

    pub(crate) fn inline(text: &str) -> FileSource {
        FileSource {
            inline: Some(text.into()),
            ..FileSource::default()
        }
    }

    fn url(u: &str) -> FileSource {
        FileSource {
            url: Some(u.into()),
            ..FileSource::default()
        }
    }

    #[test]
    fn records_table() {
        let r = record_of(&sf("hello.txt", inline("hi"), None)).unwrap();
        assert_eq!(r.key, FileKey::new("dep", "hello.txt").unwrap());
        assert_eq!(
            (r.file_name.as_str(), r.replicas, r.size, r.generation),
            ("hello.txt", 2, 2, 3)
        );
        assert_eq!(r.sha256, sha256_hex(b"hi"));
        assert!(matches!(r.source, Source::Inline));

        // A url without digest: unknown until fetched, then kept while the source is the same.
        let mut u = sf("page", url("https://example.com/a"), None);
        assert_eq!(record_of(&u).unwrap().sha256, "");
        let learned = FileRecord {
            sha256: "b".repeat(64),
            size: 10,
            ..record_of(&u).unwrap()
        };
        u.status = Some(status_of(
            &learned,
            &source_revision(&u.spec),
            &ObservedStatus::initial(None),
            None,
            &now(),
        ));
        let r = record_of(&u).unwrap();
        assert_eq!((r.sha256.as_str(), r.size), ("b".repeat(64).as_str(), 10));
        u.spec.source.url = Some("https://example.com/b".into());
        assert_eq!(
            record_of(&u).unwrap().sha256,
            "",
            "another url: fetch again"
        );

        // Uploads carry their digest; a missing one, a wrong inline digest, two or no
        // sources, a bad file name are invalid.
        let up = FileSource {
            upload: Some(UploadSource {}),
            ..FileSource::default()
        };
        assert!(record_of(&sf("u", up.clone(), Some(&"c".repeat(64)))).is_ok());
        let bad = [
            sf("u", up, None),
            sf("i", inline("hi"), Some(&"d".repeat(64))),
            sf(
                "two",
                FileSource {
                    url: Some("http://x".into()),
                    ..inline("a")
                },
                None,
            ),
            sf("none", FileSource::default(), None),
        ];
        for b in bad {
            assert!(record_of(&b).is_err(), "{}", b.name_any());
        }
        let mut named = sf("n", inline("x"), None);
        named.spec.file_name = Some("a/b".into());
        assert!(record_of(&named).is_err());
        named.spec.file_name = Some("Report (final).pdf".into());
        assert_eq!(record_of(&named).unwrap().file_name, "Report (final).pdf");
    }

    #[test]
    fn status_round_trips_through_the_record() {
        let s = sf("f", inline("content"), None);
        let record = record_of(&s).unwrap();
        let observed = ObservedStatus {
            phase: Phase::Ready,
            ready_replicas: 2,
            holders: vec!["rep-0".into(), "rep-1".into()],
            unreachable_holders: vec![],
            observed_generation: 3,
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Converged".into(),
                message: "2/2 verified copies".into(),
            }],
            lifecycle_step: 0,
        };
        let then = now();
        let revision = source_revision(&s.spec);
        let status = status_of(&record, &revision, &observed, None, &then);
        assert_eq!(status.display_size.as_deref(), Some("7 B"));
        assert_eq!(status.phase.as_deref(), Some("Ready"));
        assert_eq!(status.conditions[0].observed_generation, Some(3));
        assert_eq!(status.conditions[0].last_transition_time, then);
        let mut back = s.clone();
        back.status = Some(status.clone());
        assert_eq!(record_of(&back).unwrap().status, observed);
        // The same decision later gives the same status: the transition time carries over.
        let later =
            Time(k8s_openapi::jiff::Timestamp::from_second(then.0.as_second() + 60).unwrap());
        // (The record read back carries the content's age 0, `contentSince`, over too.)
        let reread = record_of(&back).unwrap();
        assert_eq!(
            status_of(&reread, &revision, &observed, Some(&status), &later),
            status
        );
        // A condition whose status changes gets the new time; one that stays keeps its own.
        let mut degraded = observed.clone();
        degraded.conditions[0].status = "False".into();
        degraded.conditions.push(Condition {
            type_: "Degraded".into(),
            status: "True".into(),
            reason: "NotEnoughReplicas".into(),
            message: String::new(),
        });
        let changed = status_of(&reread, &revision, &degraded, Some(&status), &later);
        assert_eq!(changed.conditions[0].last_transition_time, later);
        assert_eq!(changed.conditions[1].last_transition_time, later);
        let again = status_of(&reread, &revision, &degraded, Some(&changed), &now());
        assert_eq!(again, changed);
    }
}
