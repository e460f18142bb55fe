//! The attributes of a StoredFile's current content (when the gateway acknowledged it, and what
//! an S3 client sent with it: Content-Type, user metadata, the MD5 ETag) kept in the annotation
//! [`CONTENT_ANNOTATION`], as JSON that names the content it describes:
//!
//! ```json
//! {"sha256":"5891b5b5…","s":1048576,"t":1733356800000,"m":"9e107d9d372bb6826bd81d3542a419d6","c":"image/jpeg","u":{"owner":"ana"}}
//! ```
//!
//! (`s` the size in bytes, which the status only learns once a copy is observed; `t`
//! milliseconds since the Unix epoch, `m` the ETag, `c` the Content-Type, `u` the user
//! metadata: the same keys as the local catalog's `attrs` column.) The gateway writes it with
//! each deposit. Content replaced without it (`kubectl apply` of a new `sha256`) leaves an
//! annotation naming other content, which is then ignored: the attributes go with the bytes
//! they describe, never with the next ones. The watch cache keeps the attributes only for
//! files that have them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::ContentAttrs;

/// The annotation holding a StoredFile's content attributes.
pub const CONTENT_ANNOTATION: &str = "deposito.io/content";

#[derive(Serialize, Deserialize)]
struct Annotation {
    sha256: String,
    /// The content's size in bytes, known at the deposit (the status learns it only once
    /// the reconcile that follows has observed a copy).
    #[serde(rename = "s", default)]
    size: u64,
    #[serde(flatten)]
    attrs: ContentAttrs,
}

/// What the annotation says of a content: its size and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub size: u64,
    pub attrs: ContentAttrs,
}

/// The annotation's value for content `sha256` of `size` bytes with `attrs`.
pub fn annotation_value(sha256: &str, size: u64, attrs: &ContentAttrs) -> String {
    serde_json::to_string(&Annotation {
        sha256: sha256.to_string(),
        size,
        attrs: attrs.clone(),
    })
    .unwrap_or_default()
}

/// What `annotations` say of content `sha256`; `None` when absent, unreadable or about
/// other content.
pub fn described(
    annotations: Option<&BTreeMap<String, String>>,
    sha256: Option<&str>,
) -> Option<Described> {
    let text = annotations?.get(CONTENT_ANNOTATION)?;
    let parsed: Annotation = serde_json::from_str(text).ok()?;
    (Some(parsed.sha256.as_str()) == sha256).then_some(Described {
        size: parsed.size,
        attrs: parsed.attrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> ContentAttrs {
        ContentAttrs {
            modified_ms: 1_733_356_800_000,
            md5_etag: Some("9e107d9d372bb6826bd81d3542a419d6".into()),
            content_type: Some("image/jpeg".into()),
            metadata: [("owner".to_string(), "ana".to_string())].into(),
        }
    }

    fn annotated(value: String) -> BTreeMap<String, String> {
        [(CONTENT_ANNOTATION.to_string(), value)].into()
    }

    #[test]
    fn attributes_round_trip_for_the_content_they_name() {
        let sha = "a".repeat(64);
        let value = annotation_value(&sha, 7, &attrs());
        let start = format!("{{\"sha256\":\"{sha}\",\"s\":7,\"t\":");
        assert!(value.starts_with(&start), "{value}");
        let want = Described {
            size: 7,
            attrs: attrs(),
        };
        assert_eq!(described(Some(&annotated(value)), Some(&sha)), Some(want));
        let bare = annotation_value(&sha, 0, &ContentAttrs::default());
        assert_eq!(bare, format!("{{\"sha256\":\"{sha}\",\"s\":0,\"t\":0}}"));
    }

    #[test]
    fn attributes_of_other_content_or_unreadable_ones_are_ignored() {
        let sha = "a".repeat(64);
        let other = "b".repeat(64);
        let value = annotation_value(&sha, 7, &attrs());
        assert_eq!(
            described(Some(&annotated(value.clone())), Some(&other)),
            None
        );
        assert_eq!(described(Some(&annotated(value)), None), None);
        let junk = annotated("{not json".into());
        assert_eq!(described(Some(&junk), Some(&sha)), None);
        assert_eq!(described(Some(&BTreeMap::new()), Some(&sha)), None);
        assert_eq!(described(None, Some(&sha)), None);
    }
}
