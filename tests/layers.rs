//! The module structure (docs/architecture.md, "Layers"): imports between certrot's modules
//! only point down — no module takes a name from one that takes a name from it, directly or
//! around a circle — and nothing below the CLI imports the CLI. Read from the source: every
//! `crate::…` and `super::…` path in a file is an arrow from its module to the deepest
//! module the path names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`store::kubernetes::lease`) of every source file under `src/`.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            (name != "lib" && name != "main").then_some((name, f))
        })
        .collect()
}

/// The modules `module` (in `file`) takes names from.
fn arrows(module: &str, file: &Path, known: &BTreeSet<String>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let is_dir_module = file.ends_with("mod.rs");
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (start, prefix) in [("crate::", ""), ("super::", "super")] {
            let mut rest = line;
            while let Some(i) = rest.find(start) {
                let before = rest[..i].chars().last();
                let tail = &rest[i + start.len()..];
                rest = tail;
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let path: Vec<&str> = tail
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .collect();
                let mut base: Vec<String> = if prefix == "super" {
                    let mut m: Vec<String> = module.split("::").map(str::to_string).collect();
                    // `super` of a file module is its parent; of a `mod.rs`, the grandparent.
                    m.pop();
                    if is_dir_module {
                        m.pop();
                    }
                    m
                } else {
                    Vec::new()
                };
                // `super::*` and `super::name` name the parent module itself.
                let mut target = Some(base.join("::")).filter(|b| known.contains(b));
                for seg in path {
                    base.push(seg.to_string());
                    let name = base.join("::");
                    if known.contains(&name) {
                        target = Some(name);
                    }
                }
                if let Some(t) = target.filter(|t| t != module) {
                    out.insert(t);
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, f)| (m.clone(), arrows(m, f, &known)))
        .collect()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    assert!(g.len() > 30, "the source tree was not found: {g:?}");
    // Depth-first search for a circle, reporting the first one found.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut circle = stack[i..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(circle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("an import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn nothing_below_the_cli_imports_it() {
    let g = graph();
    for (m, to) in &g {
        if !m.starts_with("cli") {
            assert!(
                !to.iter().any(|t| t == "cli" || t.starts_with("cli::")),
                "{m} imports the CLI: {to:?}"
            );
        }
    }
    // The reader itself sees arrows (a broken reader would pass both tests).
    assert!(g["rotate"].contains("store"), "{:?}", g["rotate"]);
    assert!(g["store::kubernetes::lease"].contains("store::kubernetes"));
}

/// Every file outside the library that uses it: the binary, tests, benches, examples and
/// fuzz targets.
fn library_users() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut text = std::fs::read_to_string(root.join("src/main.rs")).unwrap();
    for d in ["tests", "benches", "examples", "fuzz/fuzz_targets"] {
        walk(&root.join(d), &mut text);
    }
    text
}

#[test]
fn the_library_exposes_only_the_modules_its_users_need() {
    // A module is `pub` only if the binary, a test, a bench, an example or a fuzz target
    // names it; everything else is `pub(crate)`, so the compiler reports its dead code.
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let users = library_users();
    let named = |m: &str| {
        users.contains(&format!("certrot::{m}::"))
            || users.contains(&format!("certrot::{m};"))
            || users.contains(&format!("certrot::{{{m}"))
            || users.contains(&format!(", {m}::"))
    };
    let mut public = 0;
    for line in lib.lines() {
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            public += 1;
            assert!(
                named(m),
                "src/lib.rs: `pub mod {m}` but nothing outside the library names it: make it pub(crate)"
            );
        }
    }
    assert!(
        public >= 5,
        "src/lib.rs was not read: {public} public modules"
    );
    assert!(
        lib.contains("pub(crate) mod net;"),
        "the reader sees crate-private modules"
    );
}
