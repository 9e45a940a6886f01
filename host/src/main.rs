use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = keepwarm::cli::Cli::parse();
    // `run` logs as its config's `[log]` says, once the config is read
    if !cli.runs_a_host() {
        keepwarm::telemetry::text();
    }
    let code = keepwarm::cli::run(cli).await;
    std::process::exit(code);
}
