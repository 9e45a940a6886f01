//! `keepwarm plugin new NAME [--lang rust|python]`: a plugin project that builds and passes
//! `keepwarm plugin check` as made. The SDK (Rust) and the contract (`wit/`) are copied in
//! from this binary, so the project needs nothing beside it (and, for Python, componentize-py).

use std::path::{Path, PathBuf};

/// The contract version the embedded SDK implements.
const CONTRACT: &str = "0.2.0";

/// The SDK's files, as `plugins/sdk/` holds them (its `wit/` is the repository's `wit/`).
const SDK: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../plugins/sdk/Cargo.toml"),
    ),
    ("README.md", include_str!("../../../plugins/sdk/README.md")),
    (
        "src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../plugins/sdk/src/http.rs"),
    ),
    (
        "src/engine.rs",
        include_str!("../../../plugins/sdk/src/engine.rs"),
    ),
];

/// The contract: `wit/factory.wit` and the WASI packages it uses.
pub(super) const WIT: &[(&str, &str)] = &[
    ("factory.wit", include_str!("../../../wit/factory.wit")),
    ("deps/cli.wit", include_str!("../../../wit/deps/cli.wit")),
    (
        "deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    ("deps/http.wit", include_str!("../../../wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml.in")),
    (
        ".cargo/config.toml",
        include_str!("templates/rust/config.toml.in"),
    ),
    ("src/lib.rs", include_str!("templates/rust/lib.rs.in")),
    ("README.md", include_str!("templates/rust/README.md.in")),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("templates/python/app.py.in")),
    ("README.md", include_str!("templates/python/README.md.in")),
];

/// A plugin's name: the project's directory, the crate, the component.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}`: a plugin name starts with a lowercase letter and has only lowercase \
             letters, digits, `-` and `_` (e.g. my-engine)"
        ))
    }
}

fn fill(text: &str, name: &str) -> String {
    text.replace("{name}", name)
        .replace("{lib}", &name.replace('-', "_"))
        .replace("{contract}", CONTRACT)
}

fn write(files: Vec<(PathBuf, String)>) -> Result<(), String> {
    for (path, text) in files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// A new project's directory, which must not exist yet.
fn fresh(parent: &Path, name: &str) -> Result<PathBuf, String> {
    check_name(name)?;
    let project = parent.join(name);
    if project.exists() {
        return Err(format!(
            "{} exists: choose another name or directory",
            project.display()
        ));
    }
    Ok(project)
}

/// Writes a new Python plugin project `name` under `parent` (built with componentize-py);
/// returns its directory.
pub(super) fn python(parent: &Path, name: &str) -> Result<PathBuf, String> {
    let project = fresh(parent, name)?;
    let mut files: Vec<(PathBuf, String)> = PYTHON
        .iter()
        .map(|(p, t)| (project.join(p), fill(t, name)))
        .collect();
    files.extend(
        WIT.iter()
            .map(|(p, t)| (project.join("wit").join(p), t.to_string())),
    );
    write(files)?;
    Ok(project)
}

/// Writes a new Rust plugin project `name` under `parent` (or, with `sdk_only`, only the SDK
/// into the project at `parent`); returns what was made.
pub(super) fn rust(parent: &Path, name: &str, sdk_only: bool) -> Result<PathBuf, String> {
    let project = if sdk_only {
        parent.to_owned()
    } else {
        fresh(parent, name)?
    };
    let sdk = project.join("keepwarm-plugin-sdk");
    if sdk_only && sdk.exists() {
        std::fs::remove_dir_all(&sdk).map_err(|e| format!("{}: {e}", sdk.display()))?;
    }
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if !sdk_only {
        files.extend(RUST.iter().map(|(p, t)| (project.join(p), fill(t, name))));
    }
    files.extend(SDK.iter().map(|(p, t)| (sdk.join(p), t.to_string())));
    files.extend(
        WIT.iter()
            .map(|(p, t)| (sdk.join("wit").join(p), t.to_string())),
    );
    write(files)?;
    Ok(project)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_has_its_sdk_and_contract_and_no_placeholder_left() {
        let dir = tempfile::tempdir().unwrap();
        let made = rust(dir.path(), "my-engine", false).unwrap();
        let lib = std::fs::read_to_string(made.join("src/lib.rs")).unwrap();
        assert!(lib.contains("name: \"my-engine\".into()") && !lib.contains("{name}"));
        let readme = std::fs::read_to_string(made.join("README.md")).unwrap();
        assert!(readme.contains("release/my_engine.wasm") && !readme.contains("{lib}"));
        assert!(made.join("keepwarm-plugin-sdk/wit/deps/http.wit").exists());
        let sdk = std::fs::read_to_string(made.join("keepwarm-plugin-sdk/Cargo.toml")).unwrap();
        assert!(sdk.contains(&format!("version = \"{CONTRACT}\"")), "{sdk}");
        let wit =
            std::fs::read_to_string(made.join("keepwarm-plugin-sdk/wit/factory.wit")).unwrap();
        assert!(wit.contains(&format!("package keepwarm:factory@{CONTRACT};")));
        // refused: an existing directory, a bad name
        assert!(rust(dir.path(), "my-engine", false)
            .unwrap_err()
            .contains("exists"));
        assert!(rust(dir.path(), "My Engine", false)
            .unwrap_err()
            .contains("lowercase"));
        // the SDK alone, replaced in place
        std::fs::write(made.join("keepwarm-plugin-sdk/stale"), "").unwrap();
        rust(&made, "", true).unwrap();
        assert!(!made.join("keepwarm-plugin-sdk/stale").exists());
        assert!(made.join("keepwarm-plugin-sdk/src/lib.rs").exists());

        let py = python(dir.path(), "py-engine").unwrap();
        let app = std::fs::read_to_string(py.join("app.py")).unwrap();
        assert!(
            app.contains("name=\"py-engine\"") && !app.contains("{name}"),
            "{app}"
        );
        assert!(py.join("wit/factory.wit").exists() && py.join("wit/deps/io.wit").exists());
        let readme = std::fs::read_to_string(py.join("README.md")).unwrap();
        assert!(readme.contains("-o py_engine.wasm"), "{readme}");
    }
}
