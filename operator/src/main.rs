use clap::Parser;
use deposito_operator::config::{Cli, Command};

fn main() {
    deposito_replica::limit_malloc_arenas();
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
