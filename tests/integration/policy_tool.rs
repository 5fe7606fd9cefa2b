//! The policy author's tool (`strata policy new|check|test`, the same code
//! as `strata-policy`): every scaffold's printed next steps succeed exactly
//! as printed, and `test` prints decisions with reasons from a fixture.

use std::path::Path;
use std::process::Command;

use crate::support;

/// Runs one printed step with `sh`, as a user would paste it.
fn run_printed(command: &str, project: &Path, path: &str, target: &Path) -> String {
    let output = Command::new("sh")
        .args(["-c", command])
        .current_dir(project)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh for {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "printed step `{command}` failed in {}:\n{stdout}\n{}",
        project.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn every_scaffold_s_printed_steps_succeed_as_printed() {
    let strata = Path::new(env!("CARGO_BIN_EXE_strata"));
    let bin_dir = strata.parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    // One target directory for the four scaffolds (and every later run):
    // they share their dependencies.
    let target = bin_dir.join("scaffold-target");
    let dir = support::temp_dir("scaffolds");
    for (kind, reason) in [
        ("retention", "more than max_age 90d"),
        ("tiering", "more than cold_after 30d"),
        ("archival", "more than after 180d"),
        ("partitioner", "key \"acme_corp\""),
    ] {
        let name = format!("my-{kind}");
        let output =
            Command::new(strata).args(["policy", "new", &name, "--kind", kind, "--dir"]).arg(&dir).output().unwrap();
        let printed = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
        let project = dir.join(&name);
        let source = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
        assert!(source.matches("EDIT:").count() >= 3, "{kind}: the scaffold marks what to edit:\n{source}");
        assert!(source.lines().count() < 220, "{kind}: a scaffold is a small starting point");
        assert!(project.join("wit/policy.wit").is_file(), "the contract travels with the scaffold");
        let commands = strata_policy::printed_commands(&printed);
        assert_eq!(commands[0], format!("cd {}", project.display()), "{printed}");
        assert!(commands.len() >= 4, "{kind}: test, build, check and test steps:\n{printed}");
        let mut last = String::new();
        for command in &commands[1..] {
            last = run_printed(command, &project, &path, &target);
        }
        assert!(last.contains(reason), "{kind}: the example facts give a decision with its reason:\n{last}");
    }
}

#[test]
fn test_prints_decisions_with_reasons_from_a_fixture() {
    let facts = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/strata-policy/templates/facts/partitions.json");
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "policy",
            "test",
            "builtin:retention-by-age",
            "--config",
            r#"{"max_age": "90d"}"#,
            "--format",
            "json",
            "--facts",
        ])
        .arg(&facts)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["now"], "2026-06-01T00:00:00Z", "the fixture's `now` is used");
    let decisions: Vec<(String, String, String)> = answer["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["partition"].as_str().unwrap().into(),
                d["action"].as_str().unwrap().into(),
                d["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("cpu/2025-06-01", "delete", "period ended 364d ago, more than max_age 90d"),
        ("cpu/2026-02-01", "delete", "period ended 119d ago, more than max_age 90d"),
        ("cpu/2026-05-20", "keep", "period ended 11d ago, within max_age 90d"),
        ("cpu/2026-06-01", "keep", "period has not ended yet"),
    ]
    .map(|(p, a, r)| (p.to_string(), a.to_string(), r.to_string()));
    assert_eq!(decisions, expected);

    // A config the component rejects fails with every problem listed.
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["policy", "test", "builtin:retention-by-age", "--config", r#"{"max_age": "soon"}"#, "--facts"])
        .arg(&facts)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("max_age"), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn the_python_scaffold_s_printed_steps_succeed_as_printed() {
    // componentize-py comes from .ci/policy-languages (PyPI, pinned).
    let tools = Path::new(&std::env::var("HOME").unwrap()).join(".cache/strata-componentize-venv/bin");
    assert!(tools.join("componentize-py").is_file(), "componentize-py is missing: run .ci/policy-languages");
    let strata = Path::new(env!("CARGO_BIN_EXE_strata"));
    let bin_dir = strata.parent().unwrap();
    let path = format!("{}:{}:{}", bin_dir.display(), tools.display(), std::env::var("PATH").unwrap_or_default());
    let dir = support::temp_dir("python-scaffold");
    let output = Command::new(strata)
        .args(["policy", "new", "py-keep", "--kind", "retention", "--lang", "python", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("--stub-wasi"), "the build step carries the flag componentize-py needs:\n{printed}");
    let project = dir.join("py-keep");
    let commands = strata_policy::printed_commands(&printed);
    let mut last = String::new();
    for command in &commands[1..] {
        last = run_printed(command, &project, &path, &dir.join("unused-target"));
    }
    assert!(last.contains("more than max_age 90d"), "{last}");
    assert!(last.contains("period has not ended yet"), "{last}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_js_scaffold_s_printed_steps_succeed_as_printed() {
    // componentize-js comes from .ci/policy-languages (npm, pinned).
    let tools = Path::new(&std::env::var("HOME").unwrap()).join(".cache/strata-componentize-js/node_modules/.bin");
    assert!(tools.join("componentize-js").is_file(), "componentize-js is missing: run .ci/policy-languages");
    let strata = Path::new(env!("CARGO_BIN_EXE_strata"));
    let bin_dir = strata.parent().unwrap();
    let path = format!("{}:{}:{}", bin_dir.display(), tools.display(), std::env::var("PATH").unwrap_or_default());
    let dir = support::temp_dir("js-scaffold");
    let output = Command::new(strata)
        .args(["policy", "new", "js-keep", "--kind", "retention", "--lang", "js", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        printed.contains("-d stdio random clocks http fetch-event"),
        "the build step disables the WASI features the host refuses:\n{printed}"
    );
    let project = dir.join("js-keep");
    let source = std::fs::read_to_string(project.join("app.js")).unwrap();
    assert!(source.matches("EDIT:").count() >= 2, "the template marks what to edit:\n{source}");
    let commands = strata_policy::printed_commands(&printed);
    assert!(commands.len() >= 4, "build, check and test steps:\n{printed}");
    let mut last = String::new();
    for command in &commands[1..] {
        last = run_printed(command, &project, &path, &dir.join("unused-target"));
    }
    assert!(
        last.contains("cpu/2025-06-01                   delete     period ended 364d ago, more than max_age 90d"),
        "{last}"
    );
    assert!(last.contains("period ended 11d ago, within max_age 90d"), "{last}");
    assert!(last.contains("period has not ended yet"), "{last}");

    // Every problem of a rejected config is reported, not the first.
    let output = Command::new(strata)
        .args(["policy", "check", "js-keep.wasm", "--config", r#"{"max_age": "soon", "x": 1}"#])
        .current_dir(&project)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("max_age: `soon` is not a duration") && stdout.contains("x: unknown key"), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}
