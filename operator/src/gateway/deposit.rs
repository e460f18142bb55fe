//! A deposit, whichever API it came through (the native `PUT /v1/files/...` or S3's
//! PutObject): choose the replicas, stream the body to them, record the content in the
//! catalog once the copies are verified and fsync'd, and answer with the durable copies.

use axum::body::Body;
use deposito_api::gateway::{Ack, FileStatus};
use deposito_api::lifecycle::Lifecycle;
use deposito_api::FileKey;

use super::trailer::TrailerDigest;
use super::{transfer, GatewayState};
use crate::engine::{now_ms, CatalogError, ContentAttrs, Deposit};
use crate::gateway::error::GatewayError;

/// Completes a deposit's attributes once the body has been read whole (S3: the MD5 of what
/// went through); an error refuses the deposit before it is recorded.
pub type FinishAttrs = Box<dyn FnOnce(&mut ContentAttrs) -> Result<(), GatewayError> + Send>;

/// A validated deposit request.
pub struct Put {
    /// The user's namespace and file name.
    pub key: FileKey,
    pub replicas: u32,
    /// The sha256 the content must have, when the client gave one.
    pub expected: Option<String>,
    pub content_length: Option<u64>,
    pub ack: Ack,
    /// Kept with the content; `modified_ms` is set when the content is acknowledged.
    pub attrs: ContentAttrs,
    pub finish: Option<FinishAttrs>,
    /// The digest announced as a trailer (`Trailer: x-deposito-sha256`), checked against the
    /// stored copies' before the content is recorded.
    pub trailer: Option<TrailerDigest>,
    /// The file's lifecycle from this content on (`replicas` is its starting level).
    pub lifecycle: Option<Lifecycle>,
    /// The retention lock asked for (ms since the epoch).
    pub retain_until_ms: Option<u64>,
}

/// Stores `body` as the new content of `put.key` and answers with the file's status, whose
/// `holders` and `readyReplicas` are the copies durable at that moment (the reconcile loop
/// adds any missing ones). When no replica can be chosen, the body is drained before the
/// error is returned, so that a client still sending reads the answer.
pub async fn store(gw: &GatewayState, put: Put, body: Body) -> Result<FileStatus, GatewayError> {
    let copies = match put.ack {
        Ack::One => 1,
        Ack::All => put.replicas as usize,
    };
    let targets = async {
        let storage = gw
            .files
            .storage_key(&put.key.namespace, &put.key.name)
            .await?;
        refuse_if_retained(gw, &put.key).await?;
        let primaries = transfer::upload_targets(gw, &storage, put.content_length, copies)?;
        Ok::<_, GatewayError>((storage, primaries))
    };
    let (storage, mut primaries) = match targets.await {
        Ok(found) => found,
        Err(err) => {
            transfer::drain(body.into_data_stream()).await;
            return Err(err);
        }
    };
    // The first target leads (with the spares after the secondaries as its fallbacks); the
    // next `copies - 1` take the body at the same time.
    let secondaries: Vec<_> = primaries
        .drain(1..copies.min(primaries.len()).max(1))
        .collect();
    // Local mode: held until the catalog commit, so no reconcile runs on this file between
    // the replica's commit and the catalog's.
    let fence = match &gw.fence {
        Some(locks) => Some(locks.lock(&storage).await),
        None => None,
    };
    let stored = transfer::upload(
        gw,
        &primaries,
        &secondaries,
        &storage,
        put.expected.as_deref(),
        put.content_length,
        body,
    )
    .await?;
    for (target, info) in &stored {
        gw.index.record_copy(&target.id, info);
    }
    let (first, info) = &stored[0];
    if let Some(trailer) = &put.trailer {
        trailer.check(&info.sha256)?;
    }
    let mut attrs = put.attrs;
    if let Some(finish) = put.finish {
        finish(&mut attrs)?;
    }
    attrs.modified_ms = now_ms();
    let entry = gw
        .files
        .put(Deposit {
            key: storage.clone(),
            file_name: put.key.name.clone(),
            replicas: put.replicas,
            sha256: info.sha256.clone(),
            size: info.size,
            holder: first.id.clone(),
            attrs,
            lifecycle: put.lifecycle,
            retain_until_ms: put.retain_until_ms,
        })
        .await?;
    drop(fence);
    let mut status = entry.to_file_status();
    // The acknowledgement names the copies that are durable now (the status computed by
    // the reconcile loop has not seen them yet).
    let mut durable: Vec<String> = stored.iter().map(|(t, _)| t.id.clone()).collect();
    durable.sort();
    durable.dedup();
    status.ready_replicas = (durable.len() as u32).min(put.replicas);
    status.holders = durable;
    tracing::info!(file = %put.key, replicas = put.replicas, sha256 = %entry.sha256,
        size = entry.size, durable = status.holders.len(), "deposited");
    Ok(status)
}

/// Refuses a deposit that would replace content under a retention lock, before any byte is
/// sent (the catalog's commit checks again).
async fn refuse_if_retained(gw: &GatewayState, key: &FileKey) -> Result<(), GatewayError> {
    let existing = gw.files.lookup(&key.namespace, &key.name).await?;
    match existing.and_then(|e| (!e.deleting).then(|| e.retained_at(now_ms()))) {
        Some(Some(until)) => Err(CatalogError::Retained(until).into()),
        _ => Ok(()),
    }
}
