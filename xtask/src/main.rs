//! Development tasks for the Tidings workspace.
//!
//! `cargo run -p xtask -- capnp` regenerates the Rust code for the Cap'n Proto schemas in
//! `schema/capnp/` into `schema/src/generated/`. `cargo run -p xtask -- capnp --check`
//! regenerates into a temporary directory and fails, naming each stale file, when the
//! committed code differs. Both need the `capnp` compiler (Debian package `capnproto`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

/// Schema files compiled into `schema/src/generated/`, relative to `schema/capnp/`.
const SCHEMAS: &[&str] = &["frames.capnp", "mesh.capnp"];

/// Module that the generated code lives in, relative to the `tidings-schema` crate root.
const PARENT_MODULE: &str = "generated";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["capnp"] => {
            let out = generated_dir();
            compile(&out)?;
            println!("regenerated Cap'n Proto code in {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        ["capnp", "--check"] => check(),
        _ => bail!("unknown arguments {args:?}; usage: cargo run -p xtask -- capnp [--check]"),
    }
}

fn workspace_root() -> PathBuf {
    // NOTE: CARGO_MANIFEST_DIR is xtask/, one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

fn schema_dir() -> PathBuf {
    workspace_root().join("schema/capnp")
}

fn generated_dir() -> PathBuf {
    workspace_root().join("schema/src/generated")
}

/// Runs the schema compiler with the Rust plugin built into `capnpc`, writing one
/// `<name>_capnp.rs` per schema into `out`.
fn compile(out: &Path) -> anyhow::Result<()> {
    let schemas = schema_dir();
    let mut command = capnpc::CompilerCommand::new();
    command
        .src_prefix(&schemas)
        .output_path(out)
        .default_parent_module(vec![PARENT_MODULE.to_string()]);
    for schema in SCHEMAS {
        command.file(schemas.join(schema));
    }
    command
        .run()
        .with_context(|| format!("capnp compile failed for {}", schemas.display()))
}

/// Name of the generated file for a schema: `frames.capnp` becomes `frames_capnp.rs`.
fn generated_name(schema: &str) -> String {
    format!("{}.rs", schema.replace('.', "_"))
}

/// Regenerates into a temporary directory and compares with the committed files.
fn check() -> anyhow::Result<ExitCode> {
    let scratch = tempfile::tempdir().context("failed to create a temporary directory")?;
    compile(scratch.path())?;

    let committed = generated_dir();
    let mut stale = Vec::new();
    for schema in SCHEMAS {
        let name = generated_name(schema);
        let fresh = fs::read(scratch.path().join(&name))
            .with_context(|| format!("capnp did not write {name}"))?;
        let current = fs::read(committed.join(&name)).ok();
        if current.as_deref() != Some(fresh.as_slice()) {
            stale.push(committed.join(&name));
        }
    }

    if stale.is_empty() {
        println!("generated Cap'n Proto code is up to date");
        return Ok(ExitCode::SUCCESS);
    }
    for path in &stale {
        eprintln!("stale or missing: {}", path.display());
    }
    eprintln!("run `cargo run -p xtask -- capnp` and commit the result");
    Ok(ExitCode::FAILURE)
}
