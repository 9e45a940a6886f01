//! A minimal OpenWhisk action runtime, speaking the actionproxy protocol on port 8080.
//!
//! - `POST /init` `{"value":{"name","main","code","binary","env"}}`: stores the action, a
//!   script with a `#!` line (`binary: false`) or a base64 executable (`binary: true`), once.
//! - `POST /run` `{"value", "activation_id", "deadline", ...}`: runs the action with the
//!   value as JSON in `argv[1]` and `__OW_*` variables in the environment; the last line of its
//!   stdout is the result and must be a JSON object; other output goes to this process's
//!   stdout/stderr, each ended by the OpenWhisk sentinel line.
//!
//! Errors come back as `{"error": "..."}` with a non-200 status, as OpenWhisk runtimes do.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tokio::sync::Mutex;

const SENTINEL: &str = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";
const EXEC: &str = "/action/exec";

#[derive(Default)]
struct Action {
    initialized: bool,
    env: Map<String, Value>,
}

type Shared = Arc<Mutex<Action>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = tokio::net::TcpListener::bind(format!("0.0.0.0:{port}")).await?;
    let action: Shared = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let action = action.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, action.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": msg }))
}

async fn handle(
    req: Request<Incoming>,
    action: Shared,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = req.into_body().collect().await?.to_bytes();
    Ok(match (method.as_str(), path.as_str()) {
        ("GET", "/") | ("GET", "/ping") => reply(StatusCode::OK, json!({ "ok": true })),
        ("POST", "/init") => init(&body, &action).await,
        // As upstream's runtimes do, the action runs to its end (and writes its sentinels)
        // when the caller goes away, e.g. a host killed mid-run: not in this request's
        // future, which hyper drops on a disconnect.
        ("POST", "/run") => tokio::spawn(async move { run(&body, &action).await })
            .await
            .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    })
}

async fn init(body: &[u8], action: &Shared) -> Response<Full<Bytes>> {
    let mut a = action.lock().await;
    if a.initialized {
        return error(
            StatusCode::FORBIDDEN,
            "Cannot initialize the action more than once.",
        );
    }
    let msg: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("init body is not JSON: {e}"),
            )
        }
    };
    let value = &msg["value"];
    let Some(code) = value["code"].as_str() else {
        return error(StatusCode::BAD_GATEWAY, "Missing main/no code to execute.");
    };
    let bytes = if value["binary"].as_bool().unwrap_or(false) {
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(code.trim()) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    &format!("binary is not base64: {e}"),
                )
            }
        }
    } else {
        code.as_bytes().to_vec()
    };
    if let Err(e) = write_exec(&bytes) {
        return error(
            StatusCode::BAD_GATEWAY,
            &format!("cannot store action: {e}"),
        );
    }
    a.env = value["env"].as_object().cloned().unwrap_or_default();
    a.initialized = true;
    reply(StatusCode::OK, json!({ "ok": true }))
}

fn write_exec(bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all("/action")?;
    std::fs::write(EXEC, bytes)?;
    std::fs::set_permissions(EXEC, std::fs::Permissions::from_mode(0o755))
}

async fn run(body: &[u8], action: &Shared) -> Response<Full<Bytes>> {
    let env = {
        let a = action.lock().await;
        if !a.initialized {
            return error(StatusCode::FORBIDDEN, "Cannot run an uninitialized action.");
        }
        a.env.clone()
    };
    let msg: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("run body is not JSON: {e}"),
            )
        }
    };
    let mut cmd = tokio::process::Command::new(EXEC);
    cmd.arg(msg["value"].to_string());
    for (k, v) in env.iter() {
        cmd.env(
            k,
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string()),
        );
    }
    if let Some(fields) = msg.as_object() {
        for (k, v) in fields.iter().filter(|(k, _)| k.as_str() != "value") {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            cmd.env(format!("__OW_{}", k.to_uppercase()), v);
        }
    }
    let outcome = cmd.output().await;
    let result = match outcome {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let mut lines: Vec<&str> = stdout.lines().collect();
            let last = lines.pop().unwrap_or("");
            for line in lines {
                println!("{line}");
            }
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            match serde_json::from_str::<Value>(last) {
                Ok(v @ Value::Object(_)) => reply(StatusCode::OK, v),
                _ => {
                    if !last.is_empty() {
                        println!("{last}");
                    }
                    error(
                        StatusCode::BAD_GATEWAY,
                        "The action did not return a dictionary.",
                    )
                }
            }
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &format!("cannot start the action: {e}"),
        ),
    };
    println!("{SENTINEL}");
    eprintln!("{SENTINEL}");
    result
}
