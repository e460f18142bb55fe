//! The one-command local system: `deposito-operator local --replicas 3` starts three replicas
//! that register; a child killed with -9 is restarted with the same address and data dir (its
//! copies still reported); SIGTERM to the operator stops every child.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_api::gateway::FileStatus;
use deposito_api::replica::InventoryPage;
use deposito_e2e::files::{count_copies, random_seed, same_bytes, write_random_file};
use deposito_e2e::proc::{alive, signal};
use deposito_e2e::{wait_for, wait_sync, Launcher, MIB};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

async fn status(l: &Launcher, name: &str) -> Result<FileStatus, String> {
    l.get_json(
        &format!("{}/v1/files/default/{name}/status", l.url()),
        &l.token,
    )
    .await
}

async fn converged(l: &Launcher, name: &str) -> FileStatus {
    wait_for(&format!("{name} converged"), T, || async move {
        let s = status(l, name).await?;
        if s.is_converged() {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_starts_3_replicas_restarts_a_killed_one_and_sigterm_stops_all() {
    let mut l = Launcher::start(3, 300).await;
    let kids = l.wait_children(3);
    let dirs = l.child_data_dirs();
    assert_eq!(
        dirs.len(),
        3,
        "expected 3 data dirs under replicas/: {dirs:?}"
    );

    let input = l.scratch("l.bin");
    write_random_file(&input, 2 * MIB, random_seed());
    let out = l.client(&[
        "deposit",
        input.to_str().unwrap(),
        "--replicas",
        "3",
        "--name",
        "l.bin",
    ]);
    assert!(out.ok(), "deposit: {out}");
    let st = converged(&l, "l.bin").await;
    wait_sync("3 copies in the children's data dirs", T, || {
        let n = count_copies(&dirs, &input);
        if n == 3 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    });

    // kill -9 one child: the supervisor restarts it with the same address and data dir.
    let victim = kids[0].clone();
    assert!(
        victim.listen.is_some() && victim.data_dir.is_some(),
        "can't tell the child's address/dir: {victim:?}"
    );
    signal(victim.pid, libc::SIGKILL);
    let back = wait_sync("the killed child restarted", T, || {
        let now = l.children();
        match now
            .iter()
            .find(|k| k.pid != victim.pid && k.data_dir == victim.data_dir)
        {
            Some(k) if now.len() == 3 => Ok(k.clone()),
            _ => Err(format!("{now:?}")),
        }
    });
    assert_eq!(
        back.listen, victim.listen,
        "restarted child listens elsewhere"
    );
    l.wait_live(3).await;

    // Its copy is still reported: in its inventory and as a holder.
    let addr = victim.listen.clone().unwrap();
    let inv_url = format!("http://{addr}/v1/inventory");
    let (l2, sha) = (&l, st.sha256.clone());
    wait_for("the restarted child's inventory lists l.bin", T, || {
        let (url, sha) = (inv_url.clone(), sha.clone());
        async move {
            let page: InventoryPage = l2.get_json(&url, &l2.replica_token).await?;
            if page
                .items
                .iter()
                .any(|o| o.name == "l.bin" && o.sha256 == sha)
            {
                Ok(())
            } else {
                Err(format!("{:?}", page.items))
            }
        }
    })
    .await;
    let st2 = converged(&l, "l.bin").await;
    assert_eq!(st2.holders.len(), 3, "{st2:?}");
    assert_eq!(count_copies(&dirs, &input), 3);
    let got = l.scratch("l.out");
    let out = l.client(&["retrieve", "l.bin", "-o", got.to_str().unwrap()]);
    assert!(out.ok() && same_bytes(&input, &got), "retrieve: {out}");

    // SIGTERM stops everything.
    let kids = l.wait_children(3);
    let code = l.terminate(Duration::from_secs(30));
    assert!(
        code.is_some(),
        "operator did not exit within 30 s of SIGTERM"
    );
    wait_sync("every child stopped", Duration::from_secs(30), || {
        let left: Vec<u32> = kids.iter().map(|k| k.pid).filter(|p| alive(*p)).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}
