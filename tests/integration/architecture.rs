//! The architecture's invariants, checked against the source tree: which
//! module may import which engine, where files are read and written, which
//! way modules depend, and that ARCHITECTURE.md names every file. A façade no
//! test guards erodes one convenient import at a time.
//!
//! Only code counts: comments, string contents and each file's trailing
//! `#[cfg(test)] mod tests` are removed first, so a test helper may create a
//! temporary directory and a comment may name any module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a source file may grow, in lines.
const FILE_LINES_MAX: usize = 1_200;

/// Where each engine may be imported.
const ENGINES: &[(&str, &[&str])] = &[
    ("rusqlite", &["catalog/"]),
    ("duckdb", &["query/"]),
    ("libduckdb_sys", &["query/"]),
    ("wasmtime", &["sandbox/"]),
    ("wasmtime_wasi", &["sandbox/"]),
    ("object_store", &["storage/"]),
];

/// The files that may touch the file system, and why.
const FILE_IO: &[(&str, &str)] = &[
    ("storage/", "data files on the storage targets"),
    ("wal.rs", "the write-ahead log"),
    ("data_dir.rs", "the data directory and its lock"),
    ("config/mod.rs", "reads its TOML file"),
    ("cli/", "commands read components and write scaffolds and benchmark data"),
    ("sandbox/cache.rs", "the compile cache"),
    ("policy/files.rs", "the only reader of the policy directory"),
    ("query/spill.rs", "DuckDB's private spill directories"),
    ("query/watchdog.rs", "reads the process's resident memory from /proc"),
    ("http/edge/fds.rs", "holds /dev/null as a reserve descriptor"),
];

/// The modules that may import `http`: it is the top of the server.
const HTTP_IMPORTERS: &[&str] = &["server", "cli"];

/// The modules that may import `flight`: the server wires it beside `http`.
const FLIGHT_IMPORTERS: &[&str] = &["server"];

struct SourceFile {
    /// Path under `host/src`, with `/`.
    path: String,
    /// The top-level module it belongs to (`catalog` for `catalog/files.rs`).
    module: String,
    /// Its code without comments, string contents and unit tests.
    code: String,
    lines: usize,
}

/// The source roots checked as one tree: the `strata` crate and the sandbox
/// crate it re-exports (`sandbox`, `facts` and the rank-0 modules they use
/// keep their module paths, their layers and their codemap names).
fn source_roots() -> [PathBuf; 2] {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    [repository.join("host/src"), repository.join("crates/strata-sandbox/src")]
}

fn sources() -> Vec<SourceFile> {
    let mut files = Vec::new();
    for root in source_roots() {
        files.extend(sources_under(&root));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(files.len() > 40, "found only {} source files under {:?}", files.len(), source_roots());
    files
}

fn sources_under(root: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).unwrap();
                let module = relative.split('/').next().unwrap().trim_end_matches(".rs").to_string();
                files.push(SourceFile {
                    code: strip_comments_and_strings(without_unit_tests(&text)),
                    lines: text.lines().count(),
                    path: relative,
                    module,
                });
            }
        }
    }
    files
}

fn without_unit_tests(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" && text[offset + line.len()..].trim_start().starts_with("mod tests") {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

/// Removes comments and the contents of string and character literals
/// (keeping the quotes), so only code is searched.
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !is_ident(chars.get(i.wrapping_sub(1))) {
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// Byte offsets where `needle` starts a path segment (not the tail of a
/// longer identifier).
fn occurrences<'a>(code: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(needle)
        .map(|(at, _)| at)
        .filter(|&at| !code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_'))
}

fn identifier_at(code: &str, at: usize) -> &str {
    let rest = &code[at..];
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
    &rest[..end]
}

/// The top-level modules a file's code names through `crate::` (also
/// `use crate::{a, b::c}`) or through `super::` reaching the crate root.
fn imported_modules(file: &SourceFile, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = &file.code;
    let mut found = BTreeSet::new();
    for at in occurrences(code, "crate::") {
        let after = at + "crate::".len();
        if code[after..].starts_with('{') {
            let group_end = matching_brace(code, after);
            let mut depth = 0;
            let mut expect_name = true;
            for (offset, c) in code[after + 1..group_end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if expect_name && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        found.insert(identifier_at(code, after + 1 + offset).to_string());
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(identifier_at(code, after).to_string());
        }
    }
    // `super::` once per level of the file's module path reaches the crate root.
    let depth = file.path.matches('/').count() + usize::from(!file.path.ends_with("mod.rs"));
    for at in occurrences(code, "super::") {
        let mut hops = 0;
        let mut rest = at;
        while code[rest..].starts_with("super::") {
            hops += 1;
            rest += "super::".len();
        }
        if hops == depth {
            found.insert(identifier_at(code, rest).to_string());
        }
    }
    found.retain(|m| modules.contains(m) && *m != file.module);
    found
}

fn matching_brace(code: &str, open: usize) -> usize {
    let mut depth = 0;
    for (offset, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + offset;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Whether `path` is one of `homes`: a file (`wal.rs`) or a directory
/// (`catalog/`, which also covers a module still in one file, `catalog.rs`).
fn allowed(path: &str, homes: &[&str]) -> bool {
    homes.iter().any(|home| match home.strip_suffix('/') {
        Some(dir) => path.starts_with(home) || path == format!("{dir}.rs"),
        None => path == *home,
    })
}

fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

#[test]
fn engines_stay_behind_their_facades() {
    let mut violations = Vec::new();
    for file in sources() {
        for (engine, homes) in ENGINES {
            if allowed(&file.path, homes) {
                continue;
            }
            // `engine::…` anywhere, and `use engine;` / `use engine as …`.
            let path_use = format!("{engine}::");
            let bare_use = format!("use {engine}");
            let bare = occurrences(&file.code, &bare_use)
                .filter(|&at| identifier_at(&file.code, at + "use ".len()) == *engine)
                .map(|at| at + "use ".len());
            for at in occurrences(&file.code, &path_use).chain(bare) {
                if identifier_at(&file.code, at) != *engine {
                    continue;
                }
                violations.push(format!(
                    "{}:{} uses {engine} (only {homes:?} may)",
                    file.path,
                    line_of(&file.code, at)
                ));
            }
        }
    }
    assert!(violations.is_empty(), "engine imports outside their façade:\n{}", violations.join("\n"));
}

#[test]
fn only_the_sandbox_crate_depends_on_wasmtime() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = std::fs::read_to_string(repository.join("Cargo.toml")).unwrap();
    let sandbox = std::fs::read_to_string(repository.join("crates/strata-sandbox/Cargo.toml")).unwrap();
    let depends = |manifest: &str| manifest.lines().any(|line| line.trim_start().starts_with("wasmtime"));
    assert!(!depends(&host), "the strata crate must reach wasmtime only through strata-sandbox");
    assert!(depends(&sandbox), "strata-sandbox is where wasmtime lives");
    for light in ["rusqlite", "duckdb", "hyper", "strata ="] {
        assert!(!sandbox.contains(light), "strata-sandbox must not depend on {light}: it builds without the server");
    }
}

#[test]
fn only_the_listed_modules_touch_the_file_system() {
    let homes: Vec<&str> = FILE_IO.iter().map(|(path, _)| *path).collect();
    let mut violations = Vec::new();
    for file in sources() {
        if allowed(&file.path, &homes) {
            continue;
        }
        for needle in ["fs::", "File::", "OpenOptions"] {
            for at in occurrences(&file.code, needle) {
                violations.push(format!("{}:{}: {needle}", file.path, line_of(&file.code, at)));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "file I/O outside the modules that own it (add the file to FILE_IO with a reason, or move the I/O):\n{}",
        violations.join("\n")
    );
}

fn module_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let files = sources();
    let modules: BTreeSet<String> =
        files.iter().map(|f| f.module.clone()).filter(|m| m != "lib" && m != "main").collect();
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files.iter().filter(|f| modules.contains(&f.module)) {
        let edges = graph.entry(file.module.clone()).or_default();
        for target in imported_modules(file, &modules) {
            edges.entry(target).or_default().insert(file.path.clone());
        }
    }
    graph
}

#[test]
fn top_level_modules_depend_downwards_only() {
    let graph = module_graph();
    // Every module must reach a point where all it imports is already
    // placed; what is left over lies on a cycle.
    let mut placed: Vec<String> = Vec::new();
    let mut remaining: BTreeSet<&String> = graph.keys().collect();
    loop {
        let ready: Vec<&String> = remaining
            .iter()
            .copied()
            .filter(|m| graph[*m].keys().all(|target| placed.contains(target) || !graph.contains_key(target)))
            .collect();
        if ready.is_empty() {
            break;
        }
        for module in ready {
            remaining.remove(module);
            placed.push(module.clone());
        }
    }
    // Of what is left, report the modules that reach themselves: the
    // others only depend on a cycle.
    let reaches_itself = |start: &String| {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].keys().collect();
        while let Some(module) = stack.pop() {
            if module == start {
                return true;
            }
            if seen.insert(module) && graph.contains_key(module) {
                stack.extend(graph[module].keys());
            }
        }
        false
    };
    let remaining: BTreeSet<&String> = remaining.into_iter().filter(|m| reaches_itself(m)).collect();
    let cycles: Vec<String> = remaining
        .iter()
        .flat_map(|m| {
            graph[*m].iter().filter(|(target, _)| remaining.contains(target)).map(move |(target, files)| {
                format!("{m} → {target} ({})", files.iter().cloned().collect::<Vec<_>>().join(", "))
            })
        })
        .collect();
    assert!(cycles.is_empty(), "these imports form cycles between top-level modules:\n{}", cycles.join("\n"));

    let wrong_way: Vec<String> = graph
        .iter()
        .filter(|(module, edges)| edges.contains_key("http") && !HTTP_IMPORTERS.contains(&module.as_str()))
        .map(|(module, edges)| {
            format!("{module} imports http ({})", edges["http"].iter().cloned().collect::<Vec<_>>().join(", "))
        })
        .collect();
    assert!(wrong_way.is_empty(), "only {HTTP_IMPORTERS:?} may import http:\n{}", wrong_way.join("\n"));
    let wrong_way: Vec<&String> = graph
        .iter()
        .filter(|(module, edges)| edges.contains_key("flight") && !FLIGHT_IMPORTERS.contains(&module.as_str()))
        .map(|(module, _)| module)
        .collect();
    assert!(wrong_way.is_empty(), "only {FLIGHT_IMPORTERS:?} may import flight: {wrong_way:?}");
}

/// The rank of each module in ARCHITECTURE.md's layer table (`| 3 | `a`, `b` | … |`).
fn documented_ranks() -> BTreeMap<String, u32> {
    let map = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let layers = map.split("## Layers").nth(1).expect("ARCHITECTURE.md has a Layers section");
    let mut ranks = BTreeMap::new();
    for line in layers.lines().take_while(|line| !line.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(rank) = cells.get(1).and_then(|cell| cell.parse::<u32>().ok()) else { continue };
        for module in cells[2].split('`').skip(1).step_by(2) {
            ranks.insert(module.trim_end_matches(".rs").to_string(), rank);
        }
    }
    ranks
}

#[test]
fn every_import_goes_down_the_documented_layers() {
    let graph = module_graph();
    let ranks = documented_ranks();
    let unranked: Vec<&String> = graph.keys().filter(|m| !ranks.contains_key(*m)).collect();
    assert!(unranked.is_empty(), "ARCHITECTURE.md's layer table does not rank {unranked:?}");
    let upwards: Vec<String> = graph
        .iter()
        .flat_map(|(module, edges)| edges.iter().map(move |(target, files)| (module, target, files)))
        .filter(|(module, target, _)| ranks[*module] <= ranks[*target])
        .map(|(module, target, files)| {
            let files = files.iter().cloned().collect::<Vec<_>>().join(", ");
            format!("{module} (rank {}) → {target} (rank {}) in {files}", ranks[module], ranks[target])
        })
        .collect();
    assert!(upwards.is_empty(), "imports that do not go down ARCHITECTURE.md's layers:\n{}", upwards.join("\n"));
}

#[test]
fn no_source_file_outgrows_a_reader() {
    let long: Vec<String> = sources()
        .iter()
        .filter(|f| f.lines > FILE_LINES_MAX)
        .map(|f| format!("{}: {} lines", f.path, f.lines))
        .collect();
    assert!(
        long.is_empty(),
        "files over {FILE_LINES_MAX} lines (split them along their concerns):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_codemap_names_every_source_file() {
    let map = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let missing: Vec<String> =
        sources().into_iter().map(|f| f.path).filter(|path| !map.contains(&format!("`{path}`"))).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md's codemap does not name:\n{}", missing.join("\n"));
}

#[test]
fn the_checker_sees_imports_through_every_spelling() {
    let modules: BTreeSet<String> = ["store", "http", "time", "tier", "query", "catalog"].map(String::from).into();
    let file = |path: &str, text: &str| SourceFile {
        module: path.split('/').next().unwrap().trim_end_matches(".rs").to_string(),
        path: path.to_string(),
        code: strip_comments_and_strings(without_unit_tests(text)),
        lines: 0,
    };
    let text = "use crate::{time::now_ns, tier::Tier};\n// crate::query in a comment\nlet s = \"crate::catalog\";\nfn f() { crate::http::x(); }\n#[cfg(test)]\nmod tests { use crate::catalog; }\n";
    let found = imported_modules(&file("store/write.rs", text), &modules);
    assert_eq!(found, ["http", "tier", "time"].map(String::from).into());
    let found = imported_modules(&file("store/write.rs", "use super::super::query::x;"), &modules);
    assert_eq!(found, ["query"].map(String::from).into());
    let found = imported_modules(&file("store/mod.rs", "use super::catalog::x; use super::write;"), &modules);
    assert_eq!(found, ["catalog"].map(String::from).into());
    assert_eq!(strip_comments_and_strings("let c = '\"'; let r = r#\"std::fs\"#; x"), "let c = ' '; let r = \"\"; x");
}
