//! `ls`, `status`, `rm`, `set-replicas`.

use std::time::Duration;

use super::{print_out, to_json, validate_name, validate_replicas, Ctx};
use deposito_api::gateway::{FileStatus, PatchFile};
use deposito_api::lifecycle::{parse_time, Lifecycle};

use crate::cli::{
    GlobalOpts, JsonArgs, NamespaceLifecycleArgs, RetainArgs, RmArgs, SetLifecycleArgs,
    SetReplicasArgs, StatusArgs,
};
use crate::error::Error;
use crate::format;

/// `deposito ls`: the table (or JSON) on stdout.
pub async fn ls(ctx: &Ctx, json: bool) -> Result<String, Error> {
    let list = ctx.client.list(&ctx.namespace).await?;
    if json {
        Ok(to_json(&list))
    } else if list.items.is_empty() {
        eprintln!("no files in namespace {}", ctx.namespace);
        Ok(String::new())
    } else {
        Ok(format::file_table(&list))
    }
}

pub async fn run_ls(global: &GlobalOpts, args: JsonArgs) -> Result<(), Error> {
    let ctx = Ctx::from_opts(global)?;
    print_out(&ls(&ctx, args.json).await?)
}

pub async fn run_status(global: &GlobalOpts, args: StatusArgs) -> Result<(), Error> {
    validate_name(&args.name)?;
    let ctx = Ctx::from_opts(global)?;
    let st = ctx.client.status(&ctx.namespace, &args.name, None).await?;
    if args.json {
        print_out(&to_json(&st))
    } else {
        print_out(&format::file_status(&st))
    }
}

/// `deposito set-replicas`: PATCH, then (unless `no_wait`) wait for exactly N copies.
pub async fn set_replicas(
    ctx: &Ctx,
    name: &str,
    replicas: u32,
    wait: Option<Duration>,
) -> Result<String, Error> {
    validate_name(name)?;
    validate_replicas(replicas)?;
    let st = ctx
        .client
        .set_replicas(&ctx.namespace, name, replicas)
        .await?;
    match wait {
        None => Ok(format!(
            "{name}: replication level set to {replicas} ({}/{} copies ready, not waiting)",
            st.ready_replicas, st.replicas
        )),
        Some(timeout) => {
            let st =
                super::wait::wait_converged(&ctx.client, &ctx.namespace, name, st, timeout, None)
                    .await?;
            Ok(format!(
                "{name}: {}/{} copies, {} bytes, sha256 {}",
                st.ready_replicas, st.replicas, st.size, st.sha256
            ))
        }
    }
}

pub async fn run_set_replicas(global: &GlobalOpts, args: SetReplicasArgs) -> Result<(), Error> {
    validate_name(&args.name)?;
    validate_replicas(args.replicas)?;
    let ctx = Ctx::from_opts(global)?;
    let wait = (!args.wait.no_wait).then(|| Duration::from_secs(args.wait.timeout));
    let line = set_replicas(&ctx, &args.name, args.replicas, wait).await?;
    print_out(&format!("{line}\n"))
}

/// `deposito set-lifecycle NAME SPEC`: PATCH the lifecycle (checked here first).
pub async fn run_set_lifecycle(global: &GlobalOpts, args: SetLifecycleArgs) -> Result<(), Error> {
    validate_name(&args.name)?;
    let spec = args.spec.trim();
    if spec != "none" {
        Lifecycle::parse(spec).map_err(|e| Error::Usage(e.to_string()))?;
    }
    let ctx = Ctx::from_opts(global)?;
    let patch = PatchFile {
        replicas: None,
        lifecycle: Some(spec.to_string()),
        retain_until: None,
    };
    let st = ctx
        .client
        .patch_file(&ctx.namespace, &args.name, &patch)
        .await?;
    print_out(&format!("{}\n", aging_line(&st)))
}

/// `deposito namespace-lifecycle [SPEC]`: shows, or sets (checked here first), the
/// namespace's default lifecycle.
pub async fn run_namespace_lifecycle(
    global: &GlobalOpts,
    args: NamespaceLifecycleArgs,
) -> Result<(), Error> {
    let spec = args.spec.as_deref().map(str::trim);
    if let Some(spec) = spec.filter(|s| *s != "none") {
        Lifecycle::parse(spec).map_err(|e| Error::Usage(e.to_string()))?;
    }
    let ctx = Ctx::from_opts(global)?;
    let now = ctx.client.namespace_lifecycle(&ctx.namespace, spec).await?;
    let shown = now.lifecycle.as_deref().unwrap_or("none");
    print_out(&format!("namespace {}: lifecycle {shown}\n", ctx.namespace))
}

/// `deposito retain NAME UNTIL`: PATCH the retention lock.
pub async fn run_retain(global: &GlobalOpts, args: RetainArgs) -> Result<(), Error> {
    validate_name(&args.name)?;
    parse_time(&args.until).map_err(Error::Usage)?;
    let ctx = Ctx::from_opts(global)?;
    let patch = PatchFile {
        replicas: None,
        lifecycle: None,
        retain_until: Some(args.until.clone()),
    };
    let st = ctx
        .client
        .patch_file(&ctx.namespace, &args.name, &patch)
        .await?;
    print_out(&format!("{}\n", aging_line(&st)))
}

/// One line on what a file's age decides now.
fn aging_line(st: &FileStatus) -> String {
    let lifecycle = match &st.lifecycle {
        Some(l) => format!(
            "lifecycle {} (step {}, next {})",
            l.spec,
            l.step,
            l.next_transition.as_deref().unwrap_or("none")
        ),
        None => "no lifecycle".to_string(),
    };
    let retained = st
        .retain_until
        .as_deref()
        .map_or(String::new(), |until| format!(", retained until {until}"));
    format!(
        "{}: {} copies in force, {lifecycle}{retained}",
        st.name, st.replicas
    )
}

/// `deposito rm`: DELETE, then (unless `no_wait`) wait until the file is gone.
pub async fn rm(ctx: &Ctx, name: &str, wait: Option<Duration>) -> Result<String, Error> {
    validate_name(name)?;
    let st = ctx.client.delete(&ctx.namespace, name).await?;
    match wait {
        None => Ok(format!("deletion of {name} requested")),
        Some(timeout) => {
            super::wait::wait_deleted(&ctx.client, &ctx.namespace, name, Some(st), timeout).await?;
            Ok(format!("deleted {name}"))
        }
    }
}

pub async fn run_rm(global: &GlobalOpts, args: RmArgs) -> Result<(), Error> {
    validate_name(&args.name)?;
    let ctx = Ctx::from_opts(global)?;
    let wait = (!args.wait.no_wait).then(|| Duration::from_secs(args.wait.timeout));
    let line = rm(&ctx, &args.name, wait).await?;
    print_out(&format!("{line}\n"))
}
