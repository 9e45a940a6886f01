use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "keepwarm=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = keepwarm::cli::run(keepwarm::cli::Cli::parse()).await;
    std::process::exit(code);
}
