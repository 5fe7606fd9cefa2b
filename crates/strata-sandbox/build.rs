//! Builds the built-in policy components (`plugins/`, wasm32-wasip2, release)
//! and generates `$OUT_DIR/builtin_policies.rs`, which embeds them with
//! `include_bytes!` so that `plugin = "builtin:retention-by-age"` needs no file
//! at run time and `cargo test` on a fresh clone needs nothing but the pinned
//! toolchain (whose `rust-toolchain.toml` lists the wasm32-wasip2 target).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built-in policies, by plugin package name. `template` is built too (it
/// is a workspace member) but is an example to copy, not a built-in.
const BUILTINS: &[&str] = &[
    "archive-after",
    "partition-by-consistent-hash",
    "partition-by-field",
    "partition-by-hash",
    "partition-by-range",
    "retention-by-age",
    "tier-by-age",
];

/// Environment variables of the outer build that must not reach the inner
/// one: flags, wrappers (clippy's driver) and target selection are for the
/// host crate, not for wasm32-wasip2 guests.
const CLEARED_VARIABLES: &[&str] =
    &["RUSTFLAGS", "RUSTDOCFLAGS", "RUSTC_WORKSPACE_WRAPPER", "RUSTC_WRAPPER", "CARGO_ENCODED_RUSTFLAGS"];

/// `CARGO_*` variables the inner build keeps: where the registry lives, the
/// shared jobserver, and network settings. Every other `CARGO_*` variable
/// (the outer target dir, profile overrides, `CARGO_BUILD_TARGET`, the
/// variables cargo sets for build scripts) is removed.
const KEPT_CARGO_VARIABLES: &[&str] = &["CARGO_HOME", "CARGO_MAKEFLAGS"];
const KEPT_CARGO_PREFIXES: &[&str] = &["CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_REGISTRY_"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let repository = manifest_dir.join("../..");
    let plugins_dir = repository.join("plugins");
    let wit_dir = repository.join("wit");

    announce_inputs(&plugins_dir, &wit_dir);

    // OUT_DIR is <target>/<profile>/build/strata-<hash>/out: the plugins get
    // their own target directory next to the profiles, so the inner cargo
    // never waits on the lock the outer cargo holds.
    let outer_target_dir = out_dir.ancestors().nth(4).map(Path::to_path_buf).unwrap_or_else(|| out_dir.clone());
    let plugins_target_dir = outer_target_dir.join("plugins-target");

    ensure_wasm_target();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        // The plugins directory's .cargo/config.toml is found from the
        // working directory, not from --manifest-path.
        .current_dir(&plugins_dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins_dir.join("Cargo.toml"));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let cleared = CLEARED_VARIABLES.contains(&name)
            || (name.starts_with("CARGO_")
                && !KEPT_CARGO_VARIABLES.contains(&name)
                && !KEPT_CARGO_PREFIXES.iter().any(|prefix| name.starts_with(prefix)));
        if cleared {
            command.env_remove(name);
        }
    }
    command.env("CARGO_TARGET_DIR", &plugins_target_dir);

    let status = command.status().unwrap_or_else(|error| panic!("cannot run cargo to build plugins/: {error}"));
    if !status.success() {
        panic!(
            "building the built-in policy components in plugins/ failed ({status}); \
             the wasm32-wasip2 target comes with the toolchain pinned in rust-toolchain.toml"
        );
    }

    let release_dir = plugins_target_dir.join("wasm32-wasip2").join("release");
    let mut generated = String::from(
        "/// The built-in policy components: `(name, component bytes)`, embedded by `crates/strata-sandbox/build.rs`.\n\
         pub const BUILTIN_COMPONENTS: &[(&str, &[u8])] = &[\n",
    );
    for name in BUILTINS {
        let file_name = format!("{}.wasm", name.replace('-', "_"));
        let built = release_dir.join(&file_name);
        let embedded = out_dir.join(&file_name);
        std::fs::copy(&built, &embedded)
            .unwrap_or_else(|error| panic!("cannot copy {} to {}: {error}", built.display(), embedded.display()));
        generated.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", embedded.display().to_string()));
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("builtin_policies.rs"), generated).expect("write builtin_policies.rs");
}

/// Installs the wasm32-wasip2 standard library with rustup when the active
/// toolchain lacks it. rustup adds the targets of `rust-toolchain.toml` when
/// it installs the toolchain, but not to a toolchain that was already there.
fn ensure_wasm_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let installed = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .is_some_and(|dir| Path::new(dir.trim()).is_dir());
    if installed {
        return;
    }
    println!("cargo:warning=installing the wasm32-wasip2 target with rustup (once)");
    match Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status() {
        Ok(status) if status.success() => {}
        Ok(status) => println!("cargo:warning=`rustup target add wasm32-wasip2` failed ({status})"),
        Err(error) => println!("cargo:warning=cannot run rustup to add wasm32-wasip2: {error}"),
    }
}

/// Tells cargo to rerun this script when a plugin's sources, the plugins
/// workspace or the WIT contract change. Lists files rather than the whole
/// `plugins/` directory so that an in-tree `plugins/target/` does not make
/// every build rerun it.
fn announce_inputs(plugins_dir: &Path, wit_dir: &Path) {
    println!("cargo:rerun-if-changed={}", wit_dir.display());
    for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", plugins_dir.join(file).display());
    }
    let Ok(entries) = std::fs::read_dir(plugins_dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join("Cargo.toml").is_file() {
            println!("cargo:rerun-if-changed={}", path.join("Cargo.toml").display());
            println!("cargo:rerun-if-changed={}", path.join("src").display());
        }
    }
}
