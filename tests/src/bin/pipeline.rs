//! The minimal pipeline (`keepwarm_tests::pipeline`) as a process of its own, as the host is,
//! so that the invoker bench's baseline does not share the bench's runtime:
//! `pipeline BROKERS INSTANCE ADDRESS...`. It runs until it is killed.

use keepwarm_tests::pipeline::Pipeline;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, instance, addresses @ ..] = args.as_slice() else {
        eprintln!("usage: pipeline BROKERS INSTANCE ADDRESS...");
        std::process::exit(2);
    };
    let Ok(instance) = instance.parse::<u32>() else {
        eprintln!("pipeline: INSTANCE must be a number, not `{instance}`");
        std::process::exit(2);
    };
    if addresses.is_empty() {
        eprintln!("pipeline: name at least one warm container's ADDRESS");
        std::process::exit(2);
    }
    let _pipeline = Pipeline::start(brokers, instance, addresses.to_vec());
    std::future::pending::<()>().await;
}
