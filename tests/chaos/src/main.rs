//! `deposito-chaos`: a seeded fault campaign against a local Deposito cluster (the operator in
//! local mode plus separate replica processes, one of them on a small tmpfs). Phases run a
//! concurrent client workload while faults are injected, then heal everything, wait for
//! convergence and check the invariants. See `tests/chaos/README.md`.
//!
//! Needs root (mounts) and the workspace binaries (`cargo build --release --bins`).

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

mod check;
mod content;
mod corrupt;
mod faults;
mod gateway;
mod ledger;
mod rollback;
mod schedule;
mod timeline;
mod workload;

use clap::Parser;
use deposito_e2e::Cluster;
use faults::FaultRunner;
use gateway::Gateway;
use ledger::Ledger;
use schedule::{FaultKind, Schedule, Settings};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::Workload;

/// A seeded fault campaign against a local Deposito cluster.
#[derive(Debug, Parser)]
#[command(name = "deposito-chaos")]
struct Args {
    /// Seed of the schedule (random when absent; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to inject in all (200 for CI, 2000 or more for the long form).
    #[arg(long, default_value_t = 200)]
    faults: usize,
    /// Replica processes (at least 3).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Faults per phase (each phase ends with heal, convergence and checks).
    #[arg(long, default_value_t = 25)]
    faults_per_phase: usize,
    /// Names each client works on.
    #[arg(long, default_value_t = 10)]
    names_per_client: usize,
    /// Longest wait for convergence after each phase, in seconds. Two minutes: a transfer
    /// slowed by a fault may rightly run on for a while (the servers cut a stalled one after
    /// their minimum-rate window, 30 s), and a temp file is only a finding while it outlives
    /// that.
    #[arg(long, default_value_t = 120)]
    converge_timeout_secs: u64,
    /// Size of the tmpfs that is each replica's data dir (all alike, so that placement by
    /// free space treats them alike; the full-disk fault fills one).
    #[arg(long, default_value = "512m")]
    tmpfs_size: String,
    /// Print the schedule and exit (no cluster is started).
    #[arg(long)]
    print_schedule: bool,
}

fn main() {
    let args = Args::parse();
    if args.replicas < 3 {
        eprintln!("deposito-chaos: --replicas must be at least 3");
        std::process::exit(2);
    }
    let settings = Settings {
        seed: args.seed.unwrap_or_else(rand::random),
        faults: args.faults,
        replicas: args.replicas,
        clients: args.clients.max(1),
        faults_per_phase: args.faults_per_phase.max(1),
        names_per_client: args.names_per_client.max(1),
    };
    let schedule = schedule::generate(&settings);
    if args.print_schedule {
        println!("schedule digest {}", schedule.digest());
        println!("{:#?}", schedule.phases);
        return;
    }
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("deposito-chaos: needs root (tmpfs and read-only bind mounts)");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Servers are spawned from this (main) thread: they die with it (PR_SET_PDEATHSIG).
    let code = runtime.block_on(campaign(&args, schedule));
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

/// Runs the whole campaign; returns the exit code. Everything (processes, mounts) is torn
/// down when it returns.
async fn campaign(args: &Args, schedule: Schedule) -> i32 {
    let started = Instant::now();
    let s = &schedule.settings;
    println!(
        "chaos: seed={} faults={} replicas={} clients={} phases={} schedule={}",
        s.seed,
        s.faults,
        s.replicas,
        s.clients,
        schedule.phases.len(),
        schedule.digest()
    );
    let mut builder = Cluster::builder()
        .replicas(s.replicas)
        .grace_period_secs(schedule::GRACE_SECS)
        .orphan_grace_secs(schedule::ORPHAN_GRACE_SECS)
        .scrub_interval_secs(30);
    for k in 1..=s.replicas {
        builder = builder.tmpfs_replica(k, &args.tmpfs_size);
    }
    let mut cluster = builder.start().await;
    println!("chaos: cluster up in {}", cluster.root_path.display());
    let gateway = Gateway::new(
        cluster.url(),
        cluster.token.clone(),
        cluster.root_path.clone(),
    );
    let ledger = Arc::new(Ledger::new(&schedule.names));
    let workload = Arc::new(Workload::new(
        gateway,
        ledger.clone(),
        cluster.scratch("uploads"),
    ));
    // Declared after the cluster: dropped first, so its mounts go before the tmpfs.
    let mut runner = FaultRunner::new(workload.clone());
    let timeout = Duration::from_secs(args.converge_timeout_secs);
    // The catalog as installed, before any write: the oldest backup there could be.
    let first_catalog = cluster.scratch("catalog-at-install.sqlite3");
    if let Err(e) = rollback::snapshot(&cluster, &first_catalog) {
        eprintln!("chaos: could not copy the catalog: {e}");
        return 2;
    }
    let mut rollbacks = 0usize;

    // Warm-up: every name written once, a few at a time, then checked.
    for chunk in schedule.warmup.chunks(8) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|op| workload.spawn_op(op.clone()))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
    let mut stuck = std::collections::BTreeSet::new();
    let warm = check::check(&cluster, &workload, timeout, &mut stuck).await;
    println!(
        "chaos: warm-up: {} names written, converged={} in {:.1}s files={} copies={}",
        schedule.warmup.len(),
        warm.converged,
        warm.elapsed.as_secs_f64(),
        warm.files,
        warm.good_copies
    );

    let phases = schedule.phases.len();
    for phase in &schedule.phases {
        ledger.phase.store(phase.number as u64, Ordering::Relaxed);
        let (ops0, faults0) = (Ledger::get(&ledger.counters.operations), runner.total());
        // The catalog as this phase starts, for a rollback at its end.
        let phase_catalog = cluster.scratch("catalog-at-phase-start.sqlite3");
        if let Err(e) = rollback::snapshot(&cluster, &phase_catalog) {
            eprintln!("chaos: could not copy the catalog: {e}");
        }
        let clients: Vec<_> = phase
            .clients
            .iter()
            .map(|ops| workload.spawn_client(ops.clone()))
            .collect();
        let phase_start = Instant::now();
        runner.run(&mut cluster, &phase.steps).await;
        let faults_took = phase_start.elapsed();
        for c in clients {
            let _ = c.await;
        }
        runner.join_background().await;
        let workload_took = phase_start.elapsed();
        runner.heal(&mut cluster).await;
        let heal_took = phase_start.elapsed() - workload_took;
        let result = check::check(&cluster, &workload, timeout, &mut stuck).await;
        println!(
            "chaos: phase {}/{}: faults={}/{} operations={} (faults {:.1}s, workload {:.1}s, \
             heal {:.1}s) converged={} in {:.1}s files={} copies={} lost={} corrupt={} \
             invariant_failures={} t={:.0}s",
            phase.number,
            phases,
            runner.total() - faults0,
            phase.fault_count(),
            Ledger::get(&ledger.counters.operations) - ops0,
            faults_took.as_secs_f64(),
            workload_took.as_secs_f64(),
            heal_took.as_secs_f64(),
            result.converged,
            result.elapsed.as_secs_f64(),
            result.files,
            result.good_copies,
            Ledger::get(&ledger.counters.lost),
            Ledger::get(&ledger.counters.corrupt),
            Ledger::get(&ledger.counters.invariant_failures),
            started.elapsed().as_secs_f64()
        );
        for _ in 0..std::mem::take(&mut runner.rollbacks_due) {
            // Every other rollback goes back to the catalog as installed (everything unknown).
            let older = if rollbacks.is_multiple_of(2) {
                &first_catalog
            } else {
                &phase_catalog
            };
            rollbacks += 1;
            catalog_rollback(
                &mut cluster,
                &mut runner,
                &workload,
                older,
                timeout,
                &mut stuck,
            )
            .await;
        }
    }
    report(&schedule, &runner, &workload, started.elapsed())
}

/// Runs the catalog rollback fault against `older`, then waits for convergence and checks
/// everything again: what went to the trash under the older catalog must be back.
async fn catalog_rollback(
    cluster: &mut Cluster,
    runner: &mut FaultRunner,
    workload: &Workload,
    older: &std::path::Path,
    timeout: Duration,
    stuck: &mut std::collections::BTreeSet<String>,
) {
    let at = Instant::now();
    match rollback::run(cluster, older).await {
        Ok(r) => {
            runner
                .wait_all_live(cluster, "after a catalog rollback")
                .await;
            let result = check::check(cluster, workload, timeout, stuck).await;
            println!(
                "chaos: catalog rollback ({}): copies in the trash {} before, {} under the \
                 older catalog, {} after the current one is back; converged={} in {:.1}s \
                 files={} copies={} lost={} ({:.1}s in all)",
                older.file_name().unwrap_or_default().to_string_lossy(),
                r.trash_before,
                r.trash_under_older,
                rollback::trashed_copies(cluster),
                result.converged,
                result.elapsed.as_secs_f64(),
                result.files,
                result.good_copies,
                Ledger::get(&workload.ledger.counters.lost),
                at.elapsed().as_secs_f64()
            );
        }
        Err(e) => workload.ledger.violation(
            ledger::Violation::Invariant,
            format!("catalog rollback could not be carried out: {e}"),
        ),
    }
}

/// Prints the violations, the fault breakdown and the summary line; returns the exit code.
fn report(schedule: &Schedule, runner: &FaultRunner, w: &Workload, elapsed: Duration) -> i32 {
    let l = &w.ledger;
    let messages = l.messages();
    for m in messages.iter().take(50) {
        println!("chaos: violation: {m}");
    }
    if messages.len() > 50 {
        println!("chaos: ... {} more violations", messages.len() - 50);
    }
    for (reason, n) in w.top_failure_reasons(6) {
        println!("chaos: client failures ({n}): {reason}");
    }
    let by_kind = |m: &std::collections::BTreeMap<FaultKind, u64>| -> String {
        FaultKind::ALL
            .iter()
            .filter_map(|k| m.get(k).map(|n| format!("{}={n}", k.label())))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let in_flight: Vec<String> = runner
        .in_flight
        .iter()
        .map(|(k, (hits, all))| format!("{}={hits}/{all}", k.label()))
        .collect();
    println!(
        "chaos: faults by kind: {} | skipped: {} | with a write in flight: {} | \
         retries: {} | level drops held back on corrupted names: {} | reads verified: {} | \
         long-full replicas seen Full/Live: {}/{}",
        by_kind(&runner.injected),
        if runner.skipped.is_empty() {
            "none".to_string()
        } else {
            by_kind(&runner.skipped)
        },
        in_flight.join(" "),
        w.retries.load(Ordering::Relaxed),
        w.guarded.load(Ordering::Relaxed),
        Ledger::get(&l.counters.reads_verified),
        runner.long_full_seen.0,
        runner.long_full_seen.1,
    );
    let c = &l.counters;
    let (lost, corrupt, inv) = (
        Ledger::get(&c.lost),
        Ledger::get(&c.corrupt),
        Ledger::get(&c.invariant_failures),
    );
    println!(
        "chaos: seed={} faults={} operations={} acknowledged={} client_failures={} lost={lost} \
         corrupt={corrupt} invariant_failures={inv} mib_written={} elapsed={:.0}s",
        schedule.settings.seed,
        runner.total(),
        Ledger::get(&c.operations),
        Ledger::get(&c.acknowledged),
        Ledger::get(&c.client_failures),
        Ledger::get(&c.bytes_written) >> 20,
        elapsed.as_secs_f64()
    );
    i32::from(lost + corrupt + inv > 0)
}
