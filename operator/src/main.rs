use clap::Parser;
use deposito_operator::config::{Cli, Command};

/// jemalloc instead of the C library's allocator: the operator's caches are many small
/// objects replaced as they change, and jemalloc's size classes and page decay keep far less
/// of that churn resident (measured with `deposito-bench kube`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them): freed pages go back to the system within about a second, by a
/// background thread, instead of the default ten seconds, so a burst of watch events (each
/// a decoded object, soon freed) does not stay resident; two arenas, as for glibc before.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 70] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2\0";

/// jemalloc's own figures, for the heap gauges of `/metrics`.
fn heap_figures() -> Option<deposito_operator::metrics::HeapFigures> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    Some(deposito_operator::metrics::HeapFigures {
        allocated: tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64,
        resident: tikv_jemalloc_ctl::stats::resident::read().ok()? as u64,
    })
}

fn main() {
    deposito_operator::metrics::set_heap_probe(heap_figures);
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime starts");
    runtime.block_on(run());
}

/// True when this binary was started under the name `deposito-replica` (the container image
/// links that name to this binary, which carries the whole replica).
fn called_as_replica() -> bool {
    std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name == "deposito-replica")
        })
        .unwrap_or(false)
}

async fn run() {
    deposito_operator::init_tracing();
    let command = if called_as_replica() {
        Command::Replica(deposito_replica::Config::parse())
    } else {
        Cli::parse().command
    };
    let result = match command {
        Command::Local(args) => deposito_operator::local::run(args).await,
        Command::Kube(args) => deposito_operator::kube::run(args).await,
        Command::DrainBeforeScaleDown(args) => deposito_operator::kube::scale_down::run(args).await,
        Command::Crd => {
            print!("{}", deposito_operator::kube::crd::crd_yaml());
            Ok(())
        }
        Command::Probe { url } => probe(&url).await,
        Command::Replica(mut config) => match config.resolve_token() {
            Ok(source) => {
                if let Some(warning) = source.warning() {
                    eprintln!("deposito-replica: {warning}");
                }
                deposito_replica::run(config).await
            }
            Err(err) => Err(err.into()),
        },
    };
    if let Err(err) = result {
        eprintln!("deposito-operator: {err:#}");
        std::process::exit(1);
    }
}

/// GETs `url`; Ok on a 2xx answer within 5 seconds.
async fn probe(url: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}
