//! `deposito`: the Deposito command-line client.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = deposito_client::cli::Cli::parse();
    std::process::ExitCode::from(deposito_client::main_with(cli))
}
