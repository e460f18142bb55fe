use clap::Parser;
use deposito_operator::config::{Cli, Command};

fn main() {
    deposito_replica::limit_malloc_arenas();
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime starts");
    runtime.block_on(run());
}

async fn run() {
    deposito_operator::init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Local(args) => deposito_operator::local::run(args).await,
        Command::Kube(args) => deposito_operator::kube::run(args).await,
        Command::Crd => {
            print!("{}", deposito_operator::kube::crd::crd_yaml());
            Ok(())
        }
        Command::Replica(mut config) => match config.resolve_token() {
            Ok(()) => deposito_replica::run(config).await,
            Err(err) => Err(err.into()),
        },
    };
    if let Err(err) = result {
        eprintln!("deposito-operator: {err:#}");
        std::process::exit(1);
    }
}
