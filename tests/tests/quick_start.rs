//! The plugin authors' quick starts, run as written: the `sh` block under "## Quick start" in
//! `plugins/sdk/README.md` (Rust) and `plugins/python/README.md`, line by line in an empty
//! directory, with the `keepwarm` built from this source first on `PATH`. Each passes only if
//! its last line (`keepwarm plugin check`) does.

use keepwarm_tests::components::keepwarm_bin;
use keepwarm_tests::host::repo_root;
use std::time::Instant;

/// The commands of the first ```sh block after `heading`.
fn block(markdown: &str, heading: &str) -> Vec<String> {
    let after = markdown
        .split_once(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in the README"))
        .1;
    let body = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("a ```sh block")
        .0;
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_sdk_readme_quick_start_builds_a_plugin_that_passes_the_check() {
    quick_start("plugins/sdk/README.md");
}

#[test]
fn the_python_quick_start_builds_a_plugin_that_passes_the_check() {
    quick_start("plugins/python/README.md");
}

/// Runs the quick start of `readme` in an empty directory; its check must pass.
fn quick_start(readme: &str) {
    let readme = std::fs::read_to_string(repo_root().join(readme)).unwrap();
    let commands = block(&readme, "## Quick start");
    assert!(
        commands
            .first()
            .is_some_and(|c| c.starts_with("keepwarm plugin new"))
            && commands
                .last()
                .is_some_and(|c| c.starts_with("keepwarm plugin check")),
        "{commands:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = keepwarm_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}{}",
        bin_dir.display(),
        // where scripts/setup.sh installs componentize-py when it is not on PATH
        keepwarm_tests::components::python_tools()
            .map(|d| format!("{}:", d.display()))
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let script = format!("set -e\n{}\n", commands.join("\n"));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        // a new author's shell: the component lands in the project's own target/
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "quick start: empty directory to a passing check in {:.1} s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
}
