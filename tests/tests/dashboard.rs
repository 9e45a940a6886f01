//! The dashboard of a real three-host cluster, rendered by headless Chromium (Debian's
//! `chromium`): what the page shows matches the host's `/status`, before and after a failover,
//! and screenshots of both are saved under `<target>/screenshots/`.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::eventually;
use keepwarm_tests::kafka::Controller;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

/// Headless Chromium on `url` with `args` (the page's timers run for `--virtual-time-budget`
/// before it dumps or shoots); its stdout.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1100",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium is installed (scripts/setup.sh installs it)");
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish on {url} within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The page as rendered, once it has drawn a status at least once.
fn rendered(address: &str) -> String {
    let url = format!("http://{address}/");
    eventually(
        Duration::from_secs(60),
        || format!("the dashboard at {url} never rendered a status"),
        || {
            let dom = chromium(&url, &["--dump-dom"]);
            dom.contains("data-rendered=").then_some(dom)
        },
    )
}

fn screenshot(address: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/<exe>
    let target = exe.ancestors().nth(3).unwrap();
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    chromium(
        &format!("http://{address}/"),
        &[&format!("--screenshot={}", path.display())],
    );
    let png = std::fs::read(&path).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} is not a screenshot of a page ({} bytes)",
        path.display(),
        png.len()
    );
    eprintln!("dashboard screenshot: {}", path.display());
    path
}

/// The text of the first element carrying `data-field="name"` within `html`.
fn field(html: &str, name: &str) -> String {
    let marker = format!("data-field=\"{name}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"));
    // the element's tag, and its content up to its closing tag, without inner tags
    let open = html[..at].rfind('<').unwrap();
    let tag = html[open + 1..].split([' ', '>']).next().unwrap();
    let rest = &html[at..];
    let inner = &rest[rest.find('>').unwrap() + 1..];
    let inner = &inner[..inner.find(&format!("</{tag}>")).unwrap()];
    let mut text = String::new();
    let mut in_tag = false;
    for ch in inner.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.trim().to_owned()
}

/// The table row (`<tr …>…</tr>`) whose attributes include `attr`.
fn row<'a>(dom: &'a str, attr: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr {attr}"))
        .or_else(|| {
            dom.match_indices("<tr ")
                .map(|(i, _)| i)
                .find(|i| dom[*i..].split('>').next().unwrap().contains(attr))
        })
        .unwrap_or_else(|| panic!("no row with {attr} in {dom}"));
    let end = dom[start..].find("</tr>").unwrap();
    &dom[start..start + end]
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// What every page shows of its host's status: the cluster figures, every member with its
/// role, the pool by action, the plugins.
fn assert_shows(dom: &str, s: &Value) {
    for k in ["id", "epoch", "active", "leader", "term", "containers"] {
        assert_eq!(field(dom, k), text(&s[k]), "{k}: {s}");
    }
    assert_eq!(field(dom, "health"), "ready", "{s}");
    assert_eq!(field(dom, "total"), text(&s["activity"]["total"]), "{s}");
    assert_eq!(
        field(dom, "pool_warm"),
        text(&s["pool"]["warm_idle"]),
        "{s}"
    );
    for m in s["members"].as_array().unwrap() {
        let r = row(dom, &format!("data-member=\"{m}\""));
        let role = if *m == s["active"] {
            "active"
        } else {
            "standby"
        };
        assert_eq!(field(r, "role"), role, "member {m}: {r}");
    }
    for p in s["pool_by_action"].as_array().unwrap() {
        let r = row(
            dom,
            &format!("data-action=\"{}\"", p["action"].as_str().unwrap()),
        );
        for k in ["plugin", "warm", "prewarm", "busy"] {
            assert_eq!(field(r, k), text(&p[k]), "{k} of {p}: {r}");
        }
    }
    for p in s["plugins"].as_array().unwrap() {
        let r = row(
            dom,
            &format!("data-sha256=\"{}\"", p["sha256"].as_str().unwrap()),
        );
        assert_eq!(field(r, "version"), text(&p["version"]), "{r}");
    }
}

#[test]
fn the_dashboard_shows_a_live_cluster_and_its_failover_as_status_says() {
    let rt = Runtime::new().unwrap();
    let n = 7900 * 10_000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(n, &format!("dash{n}")));
    let mut cluster = Cluster::start(3, n, 1);
    let first = cluster
        .active(Duration::from_secs(30))
        .expect("a host became active");
    for action in ["echo", "other", "echo"] {
        let id = rt.block_on(c.invoke("guest", action, true, json!({})));
        c.wait_for(&id, WAIT);
    }
    // settled: every container replicated, the used prewarm replaced, the pool idle
    let address = cluster.status_addresses[first].clone();
    let settled = |s: &Value| {
        let by_action = s["pool_by_action"].as_array()?;
        let held: u64 = by_action
            .iter()
            .map(|r| r["warm"].as_u64().unwrap_or(0) + r["prewarm"].as_u64().unwrap_or(0))
            .sum();
        (by_action.len() >= 3
            && held == s["containers"].as_u64()?
            && s["activity"]["total"].as_u64()? >= 3
            && s["pool"]["busy"].as_u64()? == 0)
            .then_some(())
    };
    eventually(
        Duration::from_secs(20),
        || format!("the pool never settled: {:?}", cluster.status(first)),
        || cluster.status(first).as_ref().and_then(settled),
    );

    let dom = rendered(&address);
    let status = cluster.status(first).unwrap();
    assert_shows(&dom, &status);
    assert!(
        row(&dom, "data-action=\"guest/echo\"").contains(">1<"),
        "one warm echo container: {dom}"
    );
    let before = screenshot(&address, "dashboard-before-failover.png");

    cluster.hosts[first].kill();
    let second = cluster
        .active(Duration::from_secs(10))
        .expect("a standby took over");
    let address = cluster.status_addresses[second].clone();
    eventually(
        Duration::from_secs(20),
        || {
            format!(
                "the new active host never settled: {:?}",
                cluster.status(second)
            )
        },
        || {
            let s = cluster.status(second)?;
            (s["timeline"].as_array()?.len() == 1 && s["pool_by_action"].as_array()?.len() >= 3)
                .then_some(())
        },
    );
    // the killed member: the new leader sees its matched index stand still
    let killed = status["id"].clone();
    eventually(
        Duration::from_secs(20),
        || {
            format!(
                "the killed member never stalled: {:?}",
                cluster.status(second)
            )
        },
        || {
            (cluster.status(second)?["stalled_ms"][killed.to_string()].as_u64()? > 3000)
                .then_some(())
        },
    );
    let dom = rendered(&address);
    let status = cluster.status(second).unwrap();
    assert_shows(&dom, &status);
    let gone = row(&dom, &format!("data-member=\"{killed}\""));
    assert!(field(gone, "health").starts_with("not answering"), "{gone}");
    // the failover, as this host measured it
    let took_over = &status["timeline"][0];
    assert_eq!(took_over["what"], "took-over", "{status}");
    assert_eq!(
        took_over["kept"], status["last_takeover"]["reattached"],
        "{status}"
    );
    let r = row(&dom, &format!("data-epoch=\"{}\"", took_over["epoch"]));
    for k in ["what", "epoch", "took_ms", "kept", "lost"] {
        assert_eq!(field(r, k), text(&took_over[k]), "{k}: {r}");
    }
    let after = screenshot(&address, "dashboard-after-failover.png");
    assert_ne!(
        std::fs::read(&before).unwrap(),
        std::fs::read(&after).unwrap()
    );
    assert!(Path::new(&after).exists());
}
