use clap::Parser;
use deposito_operator::config::{Cli, Command};

#[tokio::main]
async fn main() {
    deposito_operator::init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Local(args) => deposito_operator::local::run(args).await,
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
