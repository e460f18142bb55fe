//! `replicas`, `drain`, `undrain`.

use super::{print_out, to_json, Ctx};
use crate::cli::{GlobalOpts, JsonArgs, ReplicaIdArgs};
use crate::error::Error;
use crate::format;

pub async fn run_list(global: &GlobalOpts, args: JsonArgs) -> Result<(), Error> {
    let ctx = Ctx::from_opts(global)?;
    let list = ctx.client.replicas().await?;
    if args.json {
        print_out(&to_json(&list))
    } else if list.items.is_empty() {
        eprintln!("no replicas registered");
        Ok(())
    } else {
        print_out(&format::replica_table(&list))
    }
}

pub async fn run_drain(
    global: &GlobalOpts,
    args: ReplicaIdArgs,
    draining: bool,
) -> Result<(), Error> {
    if args.id.is_empty() {
        return Err(Error::Usage("replica id is empty".into()));
    }
    let ctx = Ctx::from_opts(global)?;
    ctx.client.set_draining(&args.id, draining).await?;
    if draining {
        print_out(&format!(
            "replica {} is draining: it gets no new copies and its copies move away\n",
            args.id
        ))
    } else {
        print_out(&format!("replica {} is no longer draining\n", args.id))
    }
}
