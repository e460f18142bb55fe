//! `deposito`: the Deposito command-line client.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = deposito_client::cli::Cli::parse();
    if deposito_client::cli::token_on_command_line(std::env::args_os()) {
        eprintln!("deposito: {}", deposito_client::cli::TOKEN_ON_COMMAND_LINE);
    }
    std::process::ExitCode::from(deposito_client::main_with(cli))
}
