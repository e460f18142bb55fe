//! The `StoredFile` custom resource (`deposito.io/v1alpha1`, namespaced, short name `sf`).
//!
//! One StoredFile is one file kept at `spec.replicas` verified copies. Its content comes from
//! exactly one source: `inline` (small text in the manifest), `url` (fetched by a replica,
//! pinned by `spec.sha256` when given) or `upload` (the bytes came through the gateway). The
//! API server enforces the shape (CEL rules below); the operator writes `status` by
//! server-side apply, deterministically (no timestamps), and removes every copy before the
//! resource goes away (finalizer `deposito.io/copies`).
//!
//! `metadata.name` is the resource's key and names the copies on the replicas
//! (`objects/{namespace}/{metadata.name}/{sha256}`); `spec.fileName` is the user's file name
//! and defaults to `metadata.name`. The gateway maps a file name to a resource name with
//! [`deposito_api::names::resource_name`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The finalizer that holds a StoredFile until its copies are gone.
pub const FINALIZER: &str = "deposito.io/copies";

/// This CRD's revision, recorded on the CRD as [`CRD_REVISION_ANNOTATION`]. Bump it whenever
/// the schema changes (the test `crd_revision_is_bumped_with_the_schema` says when): the
/// operator warns at start when the installed CRD is older (`helm upgrade` never updates
/// `crds/`). 1 was every CRD before revisions were recorded.
pub const CRD_REVISION: u32 = 4;

/// The CRD annotation holding [`CRD_REVISION`].
pub const CRD_REVISION_ANNOTATION: &str = "deposito.io/crd-revision";

/// The CEL rule on `spec.fileName`: the API server's half of
/// [`deposito_api::names::validate_file_name`] (the operator checks the rest, and the length
/// in bytes, when it plans). `matches` takes RE2 syntax, where `\p{Cc}` and `\p{Cf}` are the
/// Unicode control and format categories (of the Go release the API server is built with);
/// `lowerAscii` (the Kubernetes strings library) folds ASCII letter case only, like the Rust
/// rule.
pub const FILE_NAME_RULE: &str = "!self.contains('/') && !self.contains('..') && self != '.' \
     && !self.lowerAscii().startsWith('.deposito') && !self.matches('[\\\\p{Cc}\\\\p{Cf}]')";

/// What the API server says when [`FILE_NAME_RULE`] refuses a StoredFile.
pub const FILE_NAME_RULE_MESSAGE: &str = "fileName must not contain '/', '..', control or \
     Unicode format characters (such as U+202E or U+200B), be '.', or start with '.deposito' \
     in any letter case";

/// Largest `spec.source.inline`, in bytes: the object must stay well within etcd's limit.
pub const MAX_INLINE_BYTES: usize = 65_536;

/// The desired state of one stored file.
// Each `printcolumn(...)` repeats the keys `type_`, `priority`: clippy takes them for
// duplicated attributes, but they belong to different columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "deposito.io",
    version = "v1alpha1",
    kind = "StoredFile",
    namespaced,
    shortname = "sf",
    category = "deposito",
    status = "StoredFileStatus",
    doc = "A file kept at spec.replicas verified copies on distinct storage replicas",
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Verified copies wanted"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Verified copies on live replicas"
    ),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".status.displaySize",
        description = "Content size"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextTransition",
        description = "When the lifecycle's next step or the expiry falls due",
        priority = "1"
    ),
    printcolumn(
        name = "In Force",
        type_ = "integer",
        json_path = ".status.replicasInForce",
        description = "The level the lifecycle has in force now",
        priority = "1"
    ),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.lifecycleStep",
        priority = "1"
    ),
    printcolumn(
        name = "Retained Until",
        type_ = "string",
        json_path = ".status.retainedUntil",
        priority = "1"
    ),
    printcolumn(
        name = "File",
        type_ = "string",
        json_path = ".spec.fileName",
        priority = "1"
    ),
    printcolumn(
        name = "Sha256",
        type_ = "string",
        json_path = ".status.sha256",
        priority = "1"
    ),
    printcolumn(
        name = "Holders",
        type_ = "string",
        json_path = ".status.holders",
        priority = "1"
    )
)]
#[kube(validation = Rule::new(LOCK_RULE).message(LOCK_RULE_MESSAGE))]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.source.upload) || has(self.sha256)").message("an upload source needs spec.sha256"))]
pub struct StoredFileSpec {
    /// The replication level: how many verified copies, each on a different replica. May be
    /// larger than the number of replicas; the status then says Degraded. At most 512.
    #[schemars(range(min = 1, max = 512))]
    pub replicas: i32,
    /// The file name users see and the gateway serves; defaults to metadata.name. At most 255
    /// bytes, no '/', no '..', no control or Unicode format character (bidirectional
    /// controls, zero-width characters, ...), not starting with '.deposito' in any letter
    /// case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(FILE_NAME_RULE).message(FILE_NAME_RULE_MESSAGE))]
    pub file_name: Option<String>,
    /// Where the content comes from: exactly one of inline, url, upload.
    pub source: FileSource,
    /// The content's sha256 (64 lowercase hex digits). Set by the gateway on upload; optional
    /// for url (the fetched content is then recorded in status.sha256 and kept from then on);
    /// for inline it must match the content when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// The level as the file ages, and its expiry: `spec.replicas` until the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleSpec>,
    /// Until then the file is not deleted (the finalizer holds it), its content is not
    /// replaced and its level not lowered; the lock can be extended, never shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<Time>,
}

/// Exactly one of `inline`, `url`, `upload`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.inline) ? 1 : 0) + (has(self.url) ? 1 : 0) + (has(self.upload) ? 1 : 0) == 1").message("exactly one of source.inline, source.url and source.upload must be set"))]
pub struct FileSource {
    /// Small text content, kept in the manifest (at most 64 KiB, counted in UTF-8 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    #[x_kube(validation = Rule::new("size(bytes(self)) <= 65536").message("source.inline is at most 65536 bytes (UTF-8)"))]
    pub inline: Option<String>,
    /// An http or https address a replica fetches the content from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// The content arrived through the gateway and lives only in the copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSource>,
}

pub use super::crd_lifecycle::{LifecycleSpec, LifecycleStep, LOCK_RULE, LOCK_RULE_MESSAGE};

/// Marks content that arrived through the gateway.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct UploadSource {}

/// One condition, in the shape of `metav1.Condition` (the validations kubebuilder gives it):
/// `lastTransitionTime` changes only when `status` does, `observedGeneration` is the
/// generation the condition was computed for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoredFileCondition {
    /// `Ready`, `Degraded` or `Failed`.
    #[serde(rename = "type")]
    #[schemars(
        length(min = 1, max = 316),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        )
    )]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// The metadata.generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    pub last_transition_time: Time,
    /// A CamelCase reason.
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    /// What happened, for people (may be empty).
    #[schemars(length(max = 32768))]
    pub message: String,
}

/// Longest condition message the schema accepts.
pub const MAX_CONDITION_MESSAGE: usize = 32_768;

/// What the operator last observed and decided. Written by server-side apply; no field
/// changes unless something about the file did (condition times are carried over while
/// their status stays).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StoredFileStatus {
    /// Pending, Replicating, Ready, Trimming, Degraded, Lost, Deleting or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The current content's sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The current content's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// The size for people (`4.0 KiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_size: Option<String>,
    /// Verified copies of the current content on live replicas.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods holding those copies, sorted.
    #[serde(default)]
    pub holders: Vec<String>,
    /// Holders unreachable for less than the grace period: their copies still count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_holders: Vec<String>,
    /// Fingerprint of the source (and spec.sha256) that `sha256` was learned from; a change of
    /// source means the content must be fetched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<String>,
    /// Ready, Degraded and Failed, one of each at most (a list-map keyed by type).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<StoredFileCondition>,
    /// When the current content was first acknowledged: age 0 of its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_since: Option<Time>,
    /// The level the lifecycle has in force now (only with a lifecycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_in_force: Option<i32>,
    /// How many lifecycle steps have taken effect (only with a lifecycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_step: Option<i32>,
    /// When the lifecycle's next step or the expiry falls due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<Time>,
    /// When the lifecycle deletes the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
    /// The retention lock's end, while it holds: the API server then refuses a lower
    /// spec.replicas, other content or another lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_until: Option<Time>,
}

/// The CRD, with its revision annotation.
pub fn crd(
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = StoredFile::crd();
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            CRD_REVISION_ANNOTATION.to_string(),
            CRD_REVISION.to_string(),
        );
    crd
}

/// The CRD as YAML, as `deposito-operator crd` prints it and `crds/storedfile.yaml` holds.
pub fn crd_yaml() -> String {
    let crd = crd();
    let yaml = serde_yaml::to_string(&crd).expect("the CRD serializes");
    format!(
        "# Generated by `deposito-operator crd`; do not edit. CI fails when this file is stale.\n{yaml}"
    )
}

/// `1536` → `1.5 KiB`: the size column of `kubectl get sf`, in the workspace's one byte
/// formatting (unit tested in `deposito_api::units`).
pub use deposito_api::units::human_bytes as display_size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_has_the_columns_rules_and_subresource_users_rely_on() {
        let crd = serde_json::to_value(StoredFile::crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "sf");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for want in ["Replicas", "Ready", "Size", "Phase", "Age"] {
            assert!(columns.contains(&want), "{columns:?}");
        }
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["replicas"]["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(
            spec["properties"]["replicas"]["maximum"].as_f64(),
            Some(f64::from(deposito_api::openapi::MAX_REPLICAS))
        );
        let file_name_rules = &spec["properties"]["fileName"]["x-kubernetes-validations"];
        assert_eq!(file_name_rules[0]["rule"], FILE_NAME_RULE);
        let rules = spec["properties"]["source"]["x-kubernetes-validations"].to_string();
        assert!(rules.contains("has(self.inline)"), "{rules}");
        assert_eq!(
            spec["properties"]["source"]["properties"]["inline"]["maxLength"],
            65536
        );
        assert_eq!(
            spec["properties"]["source"]["properties"]["url"]["pattern"],
            "^https?://"
        );
        assert!(crd_yaml().starts_with("# Generated by `deposito-operator crd`"));
    }

    /// The fileName rule as the API server reads it: the CEL string literal `'[\\p{Cc}\\p{Cf}]'`
    /// is the RE2 class `[\p{Cc}\p{Cf}]`, and the prefix is compared after `lowerAscii()`.
    #[test]
    fn the_file_name_rule_refuses_format_characters_and_the_prefix_in_any_case() {
        assert_eq!(
            FILE_NAME_RULE,
            r"!self.contains('/') && !self.contains('..') && self != '.' && !self.lowerAscii().startsWith('.deposito') && !self.matches('[\\p{Cc}\\p{Cf}]')"
        );
        // What `crds/storedfile.yaml` says, read back as YAML.
        let yaml: serde_json::Value = serde_yaml::from_str(&crd_yaml()).unwrap();
        let file_name = &yaml["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["properties"]["fileName"];
        let rule = file_name["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap();
        assert!(
            rule.contains("!self.lowerAscii().startsWith('.deposito')"),
            "{rule}"
        );
        assert!(
            rule.contains(r"!self.matches('[\\p{Cc}\\p{Cf}]')"),
            "{rule}"
        );
        let message = file_name["x-kubernetes-validations"][0]["message"]
            .as_str()
            .unwrap();
        assert!(message.contains("Unicode format characters"), "{message}");
    }

    /// sha256 of the schema (the CRD's `spec`) at [`CRD_REVISION`].
    const CRD_SPEC_SHA256: &str =
        "8a4b09c0cdf5ef8081dc1a572c07fbe8c7b44120b8a3459014917a53775e0308";

    #[test]
    fn crd_revision_is_bumped_with_the_schema() {
        let spec = serde_json::to_string(&crd().spec).unwrap();
        let sha = deposito_api::sha256_hex(spec.as_bytes());
        assert_eq!(
            sha, CRD_SPEC_SHA256,
            "the CRD's schema changed: bump CRD_REVISION and set CRD_SPEC_SHA256 to {sha}"
        );
        assert_eq!(
            crd().metadata.annotations.unwrap()[CRD_REVISION_ANNOTATION],
            CRD_REVISION.to_string()
        );
    }

    /// `crds/storedfile.yaml` and the chart's copy are what `deposito-operator crd` prints.
    /// When this fails: `target/release/deposito-operator crd > crds/storedfile.yaml` and copy
    /// it to `charts/deposito/crds/`.
    #[test]
    fn committed_crds_are_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for path in [
            "crds/storedfile.yaml",
            "charts/deposito/crds/storedfile.yaml",
        ] {
            let committed =
                std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(
                committed == crd_yaml(),
                "{path} is stale: regenerate it with `deposito-operator crd`"
            );
        }
    }
}
