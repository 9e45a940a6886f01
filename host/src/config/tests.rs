use super::*;

fn write(dir: &Path, text: &str) -> PathBuf {
    std::fs::write(dir.join("plugin.wasm"), b"").unwrap();
    let p = dir.join("kw.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const OK: &str = r#"
[invoker]
user-memory-mb = 1024
data-dir = "data"
[kafka]
brokers = "127.0.0.1:9092"
[plugin]
name = "docker"
file = "plugin.wasm"
routes = { docker = "unix:///var/run/docker.sock" }
[runtimes]
manifest = "runtimes.json"
[actions]
catalog = "actions"
"#;

#[test]
fn loads_with_defaults_and_env_overrides() {
    let dir = std::env::temp_dir().join(format!("kw-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = write(&dir, OK);
    let env = vec![
        (
            "KEEPWARM_KAFKA_BROKERS".to_string(),
            "127.0.0.2:9093".to_string(),
        ),
        (
            "KEEPWARM_INVOKER_USER_MEMORY_MB".to_string(),
            "4096".to_string(),
        ),
        ("PATH".to_string(), "/bin".to_string()),
    ];
    let c = Config::load(&p, env).unwrap();
    assert_eq!(c.kafka.brokers, "127.0.0.2:9093");
    assert_eq!(c.invoker.user_memory_mb, 4096);
    assert_eq!(c.kafka.fetch_wait_max_ms, 2);
    assert_eq!(c.invoker.data_dir, dir.join("data"));

    let bad = write(&dir, &OK.replace("brokers =", "brokerz ="));
    let e = Config::load(&bad, Vec::new()).unwrap_err().to_string();
    assert!(e.contains("brokerz"), "{e}");
    assert!(e.contains("kw.toml"), "{e}");
    let e = Config::load(&p, vec![("KEEPWARM_NOPE_X".into(), "1".into())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("KEEPWARM_NOPE_X"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn environment_strings_stay_strings_unless_the_setting_takes_a_number() {
    let dir = std::env::temp_dir().join(format!("kw-config-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster =
        format!("{OK}[cluster]\nid = 1\ninsecure = true\npeers = {{ 1 = \"127.0.0.1:7000\" }}\n");
    let p = write(&dir, &cluster);
    let var = |k: &str, v: &str| (k.to_string(), v.to_string());
    let c = Config::load(
        &p,
        vec![
            var("KEEPWARM_CLUSTER_SECRET", "12345678"),
            var("KEEPWARM_CLUSTER_HEARTBEAT_MS", "40"),
            var("KEEPWARM_INVOKER_DESTROY_ON_EXIT", "false"),
            var("KEEPWARM_INVOKER_CLUSTER", "true"),
            var("KEEPWARM_ADMIN_TOKEN", "not-an-override"),
            var("KEEPWARM_STATUS_TOKEN", "not-an-override"),
        ],
    )
    .unwrap();
    let section = c.cluster.unwrap();
    assert_eq!(section.secret.as_deref(), Some("12345678"));
    assert_eq!(section.heartbeat_ms, 40);
    assert!(!c.invoker.destroy_on_exit);
    assert_eq!(c.invoker.cluster, "true");
    let e = Config::load(&p, vec![var("KEEPWARM_CLUSTER_HEARTBEAT_MS", "soon")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster.heartbeat-ms"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_cluster_talks_tls_unless_insecure_is_said_with_a_secret() {
    let dir = std::env::temp_dir().join(format!("kw-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = |extra: &str| {
        format!("{OK}[cluster]\nid = 1\npeers = {{ 1 = \"127.0.0.1:7000\" }}\n{extra}")
    };
    let error = |text: &str| {
        Config::load(&write(&dir, text), Vec::new())
            .unwrap_err()
            .to_string()
    };
    let e = error(&cluster(""));
    assert!(
        e.contains("mutual TLS") && e.contains("keepwarm cluster certs"),
        "{e}"
    );
    let e = error(&cluster("insecure = true\n"));
    assert!(e.contains("at least 8 characters"), "{e}");
    let e = error(&cluster("insecure = true\nsecret = \"short\"\n"));
    assert!(e.contains("at least 8 characters"), "{e}");
    let both = cluster(
        "insecure = true\nsecret = \"long-enough\"\ntls = { ca = \"a\", cert = \"b\", key = \"c\" }\n",
    );
    assert!(error(&both).contains("choose one"));
    let e = error(&cluster(
        "tls = { ca = \"missing.pem\", cert = \"missing.pem\", key = \"missing.pem\" }\n",
    ));
    assert!(
        e.contains("[cluster.tls]") && e.contains("missing.pem"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn engine_tls_is_a_cert_dir_or_named_files_relative_to_the_config() {
    let dir = std::env::temp_dir().join(format!("kw-config-route-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = |tls: &str| {
        Config::load(
            &write(&dir, &format!("{OK}[plugin.tls.docker]\n{tls}")),
            Vec::new(),
        )
    };
    let c = load("cert-dir = \"engines/e1\"\n").unwrap();
    let files = c.plugins[0].tls["docker"].files("docker").unwrap();
    assert_eq!(files.ca, dir.join("engines/e1/ca.pem"));
    assert_eq!(files.key, Some(dir.join("engines/e1/key.pem")));
    let c = load("ca = \"/pki/ca.pem\"\nserver-name = \"engine-1\"\n").unwrap();
    let files = c.plugins[0].tls["docker"].files("docker").unwrap();
    assert_eq!(
        (files.cert, files.server_name.as_deref()),
        (None, Some("engine-1"))
    );
    for (tls, says) in [
        ("cert-dir = \"e\"\nca = \"ca.pem\"\n", "not both"),
        ("server-name = \"e\"\n", "set cert-dir"),
        ("ca = \"ca.pem\"\ncert = \"c.pem\"\n", "both cert and key"),
    ] {
        let e = load(tls).unwrap_err().to_string();
        assert!(e.contains("[plugin.tls.docker]") && e.contains(says), "{e}");
    }
}

#[test]
fn zero_limits_are_refused() {
    let dir = std::env::temp_dir().join(format!("kw-config-zero-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = write(&dir, OK);
    for (var, name) in [
        ("KEEPWARM_INVOKER_MAX_IN_FLIGHT", "max-in-flight"),
        ("KEEPWARM_PLUGIN_CALL_TIMEOUT_MS", "call-timeout-ms"),
        ("KEEPWARM_PLUGIN_MAX_INSTANCES", "max-instances"),
        ("KEEPWARM_INVOKER_USER_MEMORY_MB", "user-memory-mb"),
        ("KEEPWARM_PLUGIN_STATE_MAX_KEYS", "state-max-keys"),
        ("KEEPWARM_PLUGIN_STATE_MAX_KB", "state-max-kb"),
    ] {
        let e = Config::load(&p, vec![(var.to_string(), "0".to_string())])
            .unwrap_err()
            .to_string();
        assert!(e.contains(name) && e.contains("more than 0"), "{e}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn couchdb_stores_need_a_couchdb_section_and_keys_must_be_valid() {
    let dir = std::env::temp_dir().join(format!("kw-config-couch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let couch = OK.replace("catalog = \"actions\"", "store = \"couchdb\"");
    let e = Config::load(&write(&dir, &couch), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[couchdb]"), "{e}");
    let with = format!("{couch}[couchdb]\nurl = \"http://127.0.0.1:5984\"\n");
    let c = Config::load(&write(&dir, &with), Vec::new()).unwrap();
    assert_eq!(c.actions.store, StoreKind::Couchdb);
    assert_eq!(c.couchdb.as_ref().unwrap().db_prefix, "whisk_local_");
    let bad_key = with.replace(
        "store = \"couchdb\"",
        "store = \"couchdb\"\naes-256-key = \"c2hvcnQ=\"",
    );
    let e = Config::load(&write(&dir, &bad_key), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("aes-256"), "{e}");
    let limits = format!("{OK}[limits]\nmemory-max-mb = 2048\n");
    let c = Config::load(&write(&dir, &limits), Vec::new()).unwrap();
    assert_eq!(c.limits.system().memory.max, 2048);
    assert_eq!(c.limits.system().memory.min, 128);
    let inverted = format!("{OK}[limits]\nmemory-max-mb = 64\n");
    let e = Config::load(&write(&dir, &inverted), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[limits] memory"), "{e}");
    let no_catalog = OK.replace("catalog = \"actions\"", "");
    let e = Config::load(&write(&dir, &no_catalog), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("catalog"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn plugins_come_from_plugin_the_list_and_a_drop_in_directory() {
    let dir = std::env::temp_dir().join(format!("kw-config-plugins-{}", std::process::id()));
    let drop_ins = dir.join("plugins.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(dir.join("mesos.wasm"), b"").unwrap();
    std::fs::write(drop_ins.join("podman.wasm"), b"").unwrap();
    std::fs::write(
        drop_ins.join("podman.toml"),
        "routes = { podman = \"unix:///run/podman/podman.sock\" }\nimages = [\"keepwarm/*\"]\n",
    )
    .unwrap();
    std::fs::write(drop_ins.join("README"), "not a plugin").unwrap();
    let text = OK.replace(
        "[kafka]",
        "plugins-dir = \"plugins.d\"\n[kafka]",
    ) + "[[plugins]]\nname = \"mesos\"\nfile = \"mesos.wasm\"\nkinds = [\"nodejs:*\"]\ndefault = true\n";
    let c = Config::load(&write(&dir, &text), Vec::new()).unwrap();
    let names: Vec<&str> = c.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["docker", "mesos", "podman"]);
    let podman = &c.plugins[2];
    assert_eq!(podman.file, drop_ins.join("podman.wasm"));
    assert_eq!(podman.images, ["keepwarm/*"]);
    assert_eq!(podman.routes["podman"], "unix:///run/podman/podman.sock");
    assert_eq!(c.default_plugin().name, "mesos");

    // a drop-in without its component, two of one name, two defaults
    std::fs::write(drop_ins.join("gone.toml"), "").unwrap();
    let e = Config::load(&write(&dir, &text), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gone.toml") && e.contains("gone.wasm") && e.contains("does not exist"),
        "{e}"
    );
    std::fs::remove_file(drop_ins.join("gone.toml")).unwrap();
    std::fs::write(
        drop_ins.join("again.toml"),
        "name = \"docker\"\nfile = \"podman.wasm\"\n",
    )
    .unwrap();
    let e = Config::load(&write(&dir, &text), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("both named `docker`"), "{e}");
    std::fs::write(
        drop_ins.join("again.toml"),
        "name = \"other\"\nfile = \"podman.wasm\"\ndefault = true\n",
    )
    .unwrap();
    let e = Config::load(&write(&dir, &text), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most one plugin"), "{e}");
    std::fs::write(drop_ins.join("again.toml"), "nmae = \"typo\"\n").unwrap();
    let e = Config::load(&write(&dir, &text), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("again.toml") && e.contains("nmae"), "{e}");
    std::fs::remove_file(drop_ins.join("again.toml")).unwrap();

    // no plugin at all
    let none = OK.replace(
        "[plugin]\nname = \"docker\"\nfile = \"plugin.wasm\"\nroutes = { docker = \"unix:///var/run/docker.sock\" }\n",
        "",
    );
    assert!(!none.contains("[plugin]"), "{none}");
    let e = Config::load(&write(&dir, &none), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no plugin"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}
