//! Dependencies inside the host run one way. Each top-level module of `host/src` sits in a
//! layer below; a module may name (`crate::…`) only modules of lower layers or its own. A new
//! back-edge fails here with the file and line that makes it, before it settles in.
//!
//! Inside a module's directory the same holds between its files: no two files may name each
//! other, directly or round a circle (`mod.rs`, the directory's front, is left out: it
//! declares its files and they use what it defines).
//!
//! Chosen over a workspace split (which the compiler would enforce) because the layers are
//! many and small: a crate per layer would multiply manifests and build units for a rule this
//! test states in one list.

use std::collections::{BTreeMap, BTreeSet};
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

/// The names a `super::` path reaches from `text`: `super::a::X` gives `a`,
/// `super::{a, b::Y}` gives `a` and `b`.
fn super_names(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("super::") {
            let after = &rest[at + "super::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.push(ident(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        item.push(c);
                    }
                }
                found.push(ident(&item));
            } else {
                found.push(ident(after));
            }
            rest = after;
        }
    }
    found.retain(|n| !n.is_empty());
    found
}

/// A circle in `edges` through `start`, if there is one.
fn circle_through(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(
        at: &str,
        start: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(next, start, edges, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(start, start, edges, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn files_of_a_module_name_each_other_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for file in files {
        by_dir
            .entry(file.parent().unwrap().to_owned())
            .or_default()
            .push(file);
    }
    let mut circles = BTreeSet::new();
    for (dir, files) in &by_dir {
        if dir == &src {
            continue; // the top level is `modules_depend_only_on_lower_layers`'s
        }
        let sibling = |name: &str| {
            name != "mod" && (dir.join(format!("{name}.rs")).exists() || dir.join(name).is_dir())
        };
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let own = file.file_stem().unwrap().to_str().unwrap().to_owned();
            if own == "mod" {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            // `super::` in a file's own `mod tests` means the file itself, not its directory
            let outside_tests = text.split("#[cfg(test)]").next().unwrap_or("");
            for name in super_names(outside_tests) {
                if name != own && sibling(&name) {
                    edges.entry(own.clone()).or_default().insert(name);
                }
            }
        }
        for start in edges.keys() {
            if let Some(mut circle) = circle_through(start, &edges) {
                let first = circle.iter().min().unwrap().clone();
                let at = circle.iter().position(|n| *n == first).unwrap();
                circle.rotate_left(at);
                circle.push(first);
                let dir = dir.strip_prefix(&src).unwrap().display();
                circles.insert(format!("{dir}: {}", circle.join(" -> ")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "files that name each other round a circle (move what they share into a file both use):\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_circle_check_reads_groups_and_finds_circles() {
    assert_eq!(
        super_names(
            "use super::{server::{a, b}, inbox};\nlet x = super::state::Command; // super::no"
        ),
        vec!["server", "inbox", "state"]
    );
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        circle_through("a", &edges),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(circle_through("d", &edges), None);
}
