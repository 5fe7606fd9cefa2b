//! Scaffolds in other languages than Rust. Python is built by
//! componentize-py (PyPI), which needs `--stub-wasi`: the host links no
//! filesystem, clocks or random bytes and refuses a component importing
//! them. The Python template is a retention policy; for the other kinds,
//! follow it with the world's exports in `wit/policy.wit`.

use anyhow::bail;
use strata_sandbox::sandbox::PolicyKind;

use crate::scaffold::Step;

const PYTHON_APP: &str = include_str!("../templates/python/app.py");

/// The files of a scaffold in `lang`.
pub(crate) fn files(
    lang: &str,
    kind: PolicyKind,
    fill: &dyn Fn(&str) -> String,
    wit: &str,
    fixture: &str,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    if kind != PolicyKind::Retention {
        bail!("the {lang} template is a retention policy; scaffold --lang rust for a {} policy", kind.as_str());
    }
    match lang {
        "python" => Ok(vec![
            ("app.py", fill(PYTHON_APP)),
            ("wit/policy.wit", wit.to_string()),
            ("facts.json", fixture.to_string()),
        ]),
        other => bail!("--lang {other:?} must be rust or python"),
    }
}

/// The next steps of a scaffold in `lang`, each a command that works as printed.
pub(crate) fn steps(name: &str, kind: PolicyKind, program: &str, config: &str) -> Vec<Step> {
    let wasm = format!("{name}.wasm");
    vec![
        Step { what: "edit app.py where it says EDIT:", command: String::new() },
        Step {
            what: "build the component (componentize-py from PyPI: pip install componentize-py)",
            command: format!("componentize-py -d wit -w {} componentize --stub-wasi app -o {wasm}", kind.as_str()),
        },
        Step { what: "check it against the contract", command: format!("{program} check {wasm} --config '{config}'") },
        Step {
            what: "see its decisions on the example facts",
            command: format!("{program} test {wasm} --facts facts.json --config '{config}'"),
        },
    ]
}
