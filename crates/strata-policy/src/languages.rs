//! Scaffolds in other languages than Rust. Python is built by
//! componentize-py (PyPI), which needs `--stub-wasi`; JavaScript by
//! componentize-js (npm), which needs `-d stdio random clocks http
//! fetch-event`: the host links no filesystem, clocks, random bytes or
//! network and refuses a component importing them. Both templates are
//! retention policies; for the other kinds, follow them with the world's
//! exports in `wit/policy.wit`.

use anyhow::bail;
use strata_sandbox::sandbox::PolicyKind;

use crate::scaffold::Step;

const PYTHON_APP: &str = include_str!("../templates/python/app.py");
const JS_APP: &str = include_str!("../templates/js/app.js");

/// The WASI features componentize-js would otherwise import (and the host
/// refuses): `stdio`, `random`, `clocks`, `http`, `fetch-event`.
pub(crate) const COMPONENTIZE_JS_DISABLE: &str = "-d stdio random clocks http fetch-event";

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
        "js" => {
            Ok(vec![("app.js", fill(JS_APP)), ("wit/policy.wit", wit.to_string()), ("facts.json", fixture.to_string())])
        }
        other => bail!("--lang {other:?} must be rust, python or js"),
    }
}

/// The next steps of a scaffold in `lang`, each a command that works as printed.
pub(crate) fn steps(lang: &str, name: &str, kind: PolicyKind, program: &str, config: &str) -> Vec<Step> {
    let wasm = format!("{name}.wasm");
    let (edit, build) = if lang == "js" {
        let build = Step {
            what: "build the component (componentize-js from npm: npm install -g @bytecodealliance/componentize-js)",
            command: format!("componentize-js app.js -w wit -n {} {COMPONENTIZE_JS_DISABLE} -o {wasm}", kind.as_str()),
        };
        ("edit app.js where it says EDIT:", build)
    } else {
        let build = Step {
            what: "build the component (componentize-py from PyPI: pip install componentize-py)",
            command: format!("componentize-py -d wit -w {} componentize --stub-wasi app -o {wasm}", kind.as_str()),
        };
        ("edit app.py where it says EDIT:", build)
    };
    vec![
        Step { what: edit, command: String::new() },
        build,
        Step { what: "check it against the contract", command: format!("{program} check {wasm} --config '{config}'") },
        Step {
            what: "see its decisions on the example facts",
            command: format!("{program} test {wasm} --facts facts.json --config '{config}'"),
        },
    ]
}
