//! ListObjectsV2 and ListObjects: a bucket's objects by name (byte order), filtered by
//! prefix, folded into common prefixes at a delimiter, paged by max-keys with a
//! continuation token (v2) or a marker (v1), keys URL-encoded on request.

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Response, S3Result};

use super::buckets::existing;
use super::errors::err;
use super::level::{etag, last_modified};
use super::DepositoS3;
use crate::gateway::store::ObjectEntry;

/// Most keys one listing returns (S3's limit).
const MAX_KEYS: usize = 1000;
/// Entries read from the catalog at a time.
const BATCH: usize = 1000;

/// One page of a listing.
#[derive(Debug, Default)]
struct Page {
    contents: Vec<ObjectEntry>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or common prefix returned: where the next page starts.
    last: Option<String>,
}

/// What a listing asks.
struct Query<'a> {
    prefix: &'a str,
    delimiter: Option<&'a str>,
    /// Names up to this one are skipped; a common prefix (ending with the delimiter) skips
    /// every name under it.
    after: Option<String>,
    max_keys: usize,
}

/// The common prefix `name` falls under, if the delimiter occurs after the prefix.
fn common_prefix(name: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = name.get(prefix.len()..)?;
    rest.find(delimiter)
        .map(|i| name[..prefix.len() + i + delimiter.len()].to_string())
}

/// Folds entries (sorted by name, all starting with the prefix, all after `after`) into
/// a page; false when the page is full.
fn fold(page: &mut Page, query: &Query<'_>, skip: Option<&str>, entries: Vec<ObjectEntry>) -> bool {
    for entry in entries {
        let name = entry.0.file_name.clone();
        if skip.is_some_and(|s| name.starts_with(s)) {
            continue;
        }
        let folded = common_prefix(&name, query.prefix, query.delimiter);
        if let Some(cp) = &folded {
            if page.prefixes.last() == Some(cp) {
                continue;
            }
        }
        if page.contents.len() + page.prefixes.len() == query.max_keys {
            page.truncated = true;
            return false;
        }
        match folded {
            Some(cp) => {
                page.last = Some(cp.clone());
                page.prefixes.push(cp);
            }
            None => {
                page.last = Some(name);
                page.contents.push(entry);
            }
        }
    }
    true
}

/// Reads one page of `bucket` from the catalog.
async fn page(s3: &DepositoS3, bucket: &str, query: Query<'_>) -> S3Result<Page> {
    existing(s3, bucket).await?;
    let mut page = Page::default();
    if query.max_keys == 0 {
        return Ok(page);
    }
    let skip = query.after.clone().filter(|a| {
        query
            .delimiter
            .is_some_and(|d| !d.is_empty() && a.ends_with(d))
    });
    let mut cursor = query.after.clone();
    loop {
        let (entries, more) = s3
            .buckets
            .objects(bucket, query.prefix, cursor.as_deref(), BATCH)
            .await?;
        cursor = entries.last().map(|(r, _)| r.file_name.clone()).or(cursor);
        let entries = without_open_parts(s3, bucket, entries).await?;
        if !fold(&mut page, &query, skip.as_deref(), entries) || !more {
            return Ok(page);
        }
    }
}

/// Whether `name` has the form of a part's file name, `{32 hex}.{5 digits}`; its upload id.
fn part_upload_id(name: &str) -> Option<&str> {
    let (id, number) = name.split_once('.')?;
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = number.len() == 5 && number.bytes().all(|b| b.is_ascii_digit());
    (hex && digits).then_some(id)
}

/// `entries` less the parts of open uploads, when `bucket` is the parts namespace too.
async fn without_open_parts(
    s3: &DepositoS3,
    bucket: &str,
    entries: Vec<ObjectEntry>,
) -> S3Result<Vec<ObjectEntry>> {
    if !(s3.parts_namespace_is_bucket && bucket == s3.parts_namespace) {
        return Ok(entries);
    }
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries {
        let open = match part_upload_id(&entry.0.file_name) {
            Some(id) => s3.uploads.upload(id).await?.is_some(),
            None => false,
        };
        if !open {
            kept.push(entry);
        }
    }
    Ok(kept)
}

fn max_keys(asked: Option<i32>) -> S3Result<usize> {
    match asked {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(err(
            S3ErrorCode::InvalidArgument,
            "max-keys must not be negative",
        )),
        Some(n) => Ok((n as usize).min(MAX_KEYS)),
    }
}

/// Percent-encodes what a listing returns when the client asked `encoding-type=url`.
fn encoder(encoding: Option<&EncodingType>) -> S3Result<impl Fn(String) -> String> {
    let url = match encoding.map(EncodingType::as_str) {
        None => false,
        Some(EncodingType::URL) => true,
        Some(other) => {
            return Err(err(
                S3ErrorCode::InvalidArgument,
                format!("encoding type '{other}' is not url"),
            ))
        }
    };
    Ok(move |s: String| {
        if url {
            percent_encoding::utf8_percent_encode(&s, KEY_ENCODE).to_string()
        } else {
            s
        }
    })
}

/// Everything but unreserved characters and `/` is encoded, as S3 does.
const KEY_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn objects(page: &Page, encode: &impl Fn(String) -> String) -> (Vec<Object>, Vec<CommonPrefix>) {
    let contents = page
        .contents
        .iter()
        .map(|(record, attrs)| Object {
            key: Some(encode(record.file_name.clone())),
            size: Some(record.size as i64),
            e_tag: Some(etag(record, attrs)),
            last_modified: Some(last_modified(attrs)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect();
    let prefixes = page
        .prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(encode(p.clone())),
        })
        .collect();
    (contents, prefixes)
}

/// ListObjectsV2. The continuation token is the hex of the last key or common prefix.
pub async fn list_v2(
    s3: &DepositoS3,
    input: ListObjectsV2Input,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let encode = encoder(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let after = match &input.continuation_token {
        Some(token) => Some(
            hex::decode(token)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .ok_or_else(|| {
                    err(
                        S3ErrorCode::InvalidArgument,
                        "the continuation token is not valid",
                    )
                })?,
        ),
        None => input.start_after.clone().filter(|s| !s.is_empty()),
    };
    let max = max_keys(input.max_keys)?;
    let page = page(
        s3,
        &input.bucket,
        Query {
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after,
            max_keys: max,
        },
    )
    .await?;
    let (contents, prefixes) = objects(&page, &encode);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(encode(prefix)),
        delimiter: input.delimiter.map(&encode),
        max_keys: Some(max as i32),
        key_count: Some((contents.len() + prefixes.len()) as i32),
        is_truncated: Some(page.truncated),
        continuation_token: input.continuation_token,
        next_continuation_token: page.last.filter(|_| page.truncated).map(hex::encode),
        start_after: input.start_after.map(&encode),
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// ListObjects (v1): the marker is the last key or common prefix returned.
pub async fn list_v1(
    s3: &DepositoS3,
    input: ListObjectsInput,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let encode = encoder(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = max_keys(input.max_keys)?;
    let page = page(
        s3,
        &input.bucket,
        Query {
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after: input.marker.clone().filter(|m| !m.is_empty()),
            max_keys: max,
        },
    )
    .await?;
    let (contents, prefixes) = objects(&page, &encode);
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(encode(prefix)),
        delimiter: input.delimiter.map(&encode),
        marker: input.marker.map(&encode),
        max_keys: Some(max as i32),
        is_truncated: Some(page.truncated),
        next_marker: page.last.filter(|_| page.truncated).map(&encode),
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ContentAttrs, FileRecord, ObservedStatus, Source};
    use deposito_api::FileKey;

    fn entries(names: &[&str]) -> Vec<ObjectEntry> {
        names
            .iter()
            .map(|n| {
                let key = FileKey::new("b", n).unwrap();
                let record = FileRecord {
                    file_name: key.name.clone(),
                    key,
                    replicas: 1,
                    sha256: String::new(),
                    size: 0,
                    generation: 1,
                    deleting: false,
                    source: Source::Upload,
                    status: ObservedStatus::initial(None),
                    aging: Default::default(),
                };
                (record, ContentAttrs::default())
            })
            .collect()
    }

    fn run(
        names: &[&str],
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> Page {
        let query = Query {
            prefix,
            delimiter,
            after: after.map(str::to_string),
            max_keys: max,
        };
        let all: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.starts_with(prefix) && after.is_none_or(|a| *n > a))
            .collect();
        let skip = query
            .after
            .clone()
            .filter(|a| delimiter.is_some_and(|d| a.ends_with(d)));
        let mut page = Page::default();
        fold(&mut page, &query, skip.as_deref(), entries(&all));
        page
    }

    fn keys(page: &Page) -> Vec<String> {
        page.contents
            .iter()
            .map(|(r, _)| r.file_name.clone())
            .collect()
    }

    const NAMES: [&str; 7] = ["a-1", "a-2", "b", "c-x-1", "c-x-2", "c-y", "d"];

    #[test]
    fn delimiter_folds_names_into_common_prefixes_counted_once() {
        let page = run(&NAMES, "", Some("-"), None, 1000);
        assert_eq!(keys(&page), ["b", "d"]);
        assert_eq!(page.prefixes, ["a-", "c-"]);
        assert!(!page.truncated);
        let page = run(&NAMES, "c-", Some("-"), None, 1000);
        assert_eq!(page.prefixes, ["c-x-"]);
        assert_eq!(keys(&page), ["c-y"]);
    }

    #[test]
    fn pages_resume_after_a_key_or_a_common_prefix_without_repeats() {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let page = run(&NAMES, "", Some("-"), after.as_deref(), 1);
            seen.extend(keys(&page));
            seen.extend(page.prefixes.clone());
            if !page.truncated {
                break;
            }
            after = page.last.clone();
        }
        assert_eq!(seen, ["a-", "b", "c-", "d"]);
        let page = run(&NAMES, "", None, Some("b"), 2);
        assert_eq!(
            (keys(&page), page.truncated),
            (vec!["c-x-1".into(), "c-x-2".into()], true)
        );
    }
}
