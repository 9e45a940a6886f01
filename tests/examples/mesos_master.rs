//! Runs the Mesos master simulator (one agent, tasks as Docker containers) until Ctrl-C,
//! printing its frameworks and tasks as they change.
//!
//! `cargo run -p keepwarm-tests --example mesos_master -- [127.0.0.1:5050]`

use keepwarm_tests::mesos::{MesosMaster, Options};
use std::time::Duration;

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5050".into());
    let master = MesosMaster::start_on(Options::default(), &listen).await;
    println!(
        "mesos master simulator on http://{} (Ctrl-C or SIGTERM stops it and removes its containers)",
        master.addr
    );
    let mut last = String::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let now = format!(
            "frameworks {:?}\ntasks {:?}",
            master.frameworks(),
            master.tasks()
        );
        if now != last {
            println!("{now}");
            last = now;
        }
    }
    master.shutdown().await;
}
