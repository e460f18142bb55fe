//! `deposito-bench`: throughput and memory of a local Deposito cluster, beside baselines
//! measured in the same run. See BENCHMARKS.md.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    deposito_e2e::bench::run(std::env::args().skip(1).collect()).await
}
