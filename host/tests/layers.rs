//! Dependencies inside the host run one way. Each top-level module of `host/src` sits in a
//! layer below; a module may name (`crate::…`) only modules of lower layers or its own. A new
//! back-edge fails here with the file and line that makes it, before it settles in.
//!
//! Chosen over a workspace split (which the compiler would enforce) because the layers are
//! many and small: a crate per layer would multiply manifests and build units for a rule this
//! test states in one list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first. Modules on one line are peers and must not name each other.
const LAYERS: &[&[&str]] = &[
    &[
        "clock",
        "json_file",
        "data_dir",
        "couchdb",
        "pem",
        "service",
        "metrics",
        "telemetry",
    ],
    &["factory"],
    &["testing"],
    &["plugin", "fence", "engines"],
    &["action"],
    &["pool"],
    &["activation"],
    &["activation_store"],
    &["feed"],
    &["cluster"],
    &["failover", "lease", "step_down", "rollout"],
    &["quarantine"],
    &["config"],
    &["parts"],
    &["role"],
    &["invoker", "check"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src` belongs to (`None`: `lib.rs`, `main.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(name) => Some(name.to_owned()),
        None => Some(first),
    }
}

/// Every `crate::NAME` in `text`, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let preceded = rest[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
            if !name.is_empty() && !preceded {
                found.push((n + 1, name));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut unplaced = BTreeMap::new();
    let mut back_edges = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            unplaced.insert(module, file.clone());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_paths(&text) {
            if target == module {
                continue;
            }
            match layer_of(&target) {
                Some(layer) if layer < own => {}
                _ => back_edges.push(format!(
                    "{}:{line}: {module} names crate::{target}",
                    file.strip_prefix(&src).unwrap().display()
                )),
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules not placed in a layer (add them to LAYERS in host/tests/layers.rs): {unplaced:?}"
    );
    assert!(
        back_edges.is_empty(),
        "dependencies that run upward or sideways:\n{}",
        back_edges.join("\n")
    );
}

#[test]
fn the_scanner_finds_paths_and_skips_comments() {
    let text = "use crate::pool::Pool;\n// crate::cli is only named here\nlet x = $crate::y; f(crate::feed::run)";
    assert_eq!(
        crate_paths(text),
        vec![(1, "pool".to_string()), (3, "feed".to_string())]
    );
}
