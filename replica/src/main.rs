//! `deposito-replica`: see the library crate for the server itself.

use std::process::ExitCode;

use clap::Parser;
use deposito_replica::Config;

fn main() -> ExitCode {
    deposito_replica::limit_malloc_arenas();
    let mut config = Config::parse();
    match config.resolve_token() {
        Ok(source) => {
            if let Some(warning) = source.warning() {
                eprintln!("deposito-replica: {warning}");
            }
        }
        Err(e) => {
            eprintln!("deposito-replica: {e}");
            return ExitCode::from(1);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deposito-replica: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(deposito_replica::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deposito-replica: {e:#}");
            ExitCode::from(1)
        }
    }
}
