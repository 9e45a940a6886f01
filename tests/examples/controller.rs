//! Plays the OpenWhisk controller for a quick manual check: sends one `ActivationMessage` to
//! `invoker{N}` and prints the acknowledgements that come back on `completed{controller}`.
//!
//! ```sh
//! cargo run -p keepwarm-tests --example controller -- guest/hello '{"name":"Ada"}' [--instance 0] [--blocking]
//! ```

use keepwarm_tests::kafka::Controller;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let action = args.first().map(String::as_str).unwrap_or("guest/hello");
    let content: serde_json::Value = args
        .get(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| serde_json::from_str(a).expect("the second argument must be JSON"))
        .unwrap_or(serde_json::json!({}));
    let instance = args
        .iter()
        .position(|a| a == "--instance")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--instance N"))
        .unwrap_or(0);
    let blocking = args.iter().any(|a| a == "--blocking");
    let (namespace, name) = action.split_once('/').expect("action as namespace/name");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(Controller::new(instance, "0"));
    let (id, msg) = c.message(namespace, name, blocking, content);
    println!("→ invoker{instance}: {msg}");
    rt.block_on(c.send_raw(&msg.to_string()));
    for ack in c.wait_for(&id, Duration::from_secs(60)) {
        println!("← completed0: {ack}");
    }
}
