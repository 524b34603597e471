//! The crate's structure, checked from its source: every module imports
//! only from its own layer or the layers below it (docs/architecture.md),
//! and no two modules, down to single files, import each other directly or
//! in a circle.
//!
//! Imports are read from the text of `src/`: `use` statements, `crate::…`
//! and `super::…` paths, and paths through a module's own children,
//! without comments, literals and the `#[cfg(test)]` module at the end of a
//! file (tests may reach anywhere). A name a module re-exports (`pub use`)
//! counts as an import of the module that defines it, and a re-export is
//! not itself an import: a parent that only names its children's types
//! does not depend on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use its own layer and those
/// below; a new top-level module must be placed here.
const LAYERS: &[&[&str]] = &[
    &["sys"],
    &["config"],
    &["entry", "rules", "batch", "task", "testtree"],
    &["walk", "output", "progress"],
    &["scan", "snapdiff", "endpoint", "gpfs", "client"],
    &["ops"],
    &["agent"],
    &["hub"],
    &["cli", "main"],
];

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

type ModPath = Vec<String>;

/// One source file: its module, what it uses, and what it re-exports
/// (name → the path it stands for).
struct File {
    module: ModPath,
    uses: Vec<ModPath>,
    reexports: BTreeMap<String, ModPath>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/agent/tasks/mod.rs` → `["agent", "tasks"]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments, string and char literals, and
/// the `#[cfg(test)]` modules at its end.
fn code(text: &str) -> String {
    let test_module = text.match_indices("#[cfg(test)]\n").find(|(i, m)| {
        let next = text[i + m.len()..].trim_start();
        ["mod ", "pub mod ", "pub(crate) mod "]
            .iter()
            .any(|k| next.starts_with(k))
    });
    let text = match test_module {
        Some((i, _)) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let skip_to = |from: usize, end: &[u8]| {
        let mut j = from;
        while j < b.len() && !b[j..].starts_with(end) {
            j += if b[j] == b'\\' && end == b"\"" { 2 } else { 1 };
        }
        (j + end.len()).min(b.len())
    };
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            i = skip_to(i, b"\n");
            out.push('\n');
        } else if b[i..].starts_with(b"/*") {
            i = skip_to(i + 2, b"*/");
        } else if b[i..].starts_with(b"r#\"") {
            i = skip_to(i + 3, b"\"#");
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i = skip_to(i + 1, b"\"");
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i = skip_to(i + 2, b"'");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Calls `f` with every path of a use tree (`crate::{a, b::{c as d}}`)
/// and the name it is known by.
fn expand(prefix: &str, tree: &str, f: &mut impl FnMut(String, String)) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            let mut it = tree.split(" as ");
            let path = format!("{prefix}{}", it.next().unwrap().trim());
            let name = match it.next() {
                Some(alias) => alias.trim().to_string(),
                None => path.rsplit("::").next().unwrap().to_string(),
            };
            f(path, name);
        }
        Some(open) => {
            let head = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut part = String::new();
            for c in inner.chars().chain(std::iter::once(',')) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if c == ',' && depth == 0 {
                    if !part.trim().is_empty() {
                        expand(&format!("{prefix}{head}"), &part, f);
                    }
                    part.clear();
                } else {
                    part.push(c);
                }
            }
        }
    }
}

/// A path as written in `module` made absolute: `crate::`, `super::`,
/// `self::` and paths that start with one of the module's `children`.
/// `None` for paths outside the crate (`std::`, other crates).
fn absolute(module: &[String], children: &BTreeSet<String>, path: &str) -> Option<ModPath> {
    let parts: Vec<&str> = path
        .split("::")
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "*")
        .collect();
    let (mut base, mut rest): (ModPath, &[&str]) = match parts.first() {
        Some(&"crate") => (Vec::new(), &parts[1..]),
        Some(&"super") | Some(&"self") => (module.to_vec(), &parts[..]),
        Some(first) if children.contains(*first) => (module.to_vec(), &parts[..]),
        _ => return None,
    };
    while let Some(&first) = rest.first() {
        match first {
            "super" => {
                base.pop()?;
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    base.extend(rest.iter().map(|s| s.to_string()));
    Some(base)
}

/// Reads one file: its plain imports, its re-exports, and every other
/// path it names through `crate::`, `super::` or a child module.
fn read(module: ModPath, children: &BTreeSet<String>, code: &str) -> File {
    let mut uses = Vec::new();
    let mut reexports = BTreeMap::new();
    let mut rest_of_code = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let word = i == 0 || !is_ident(rest.as_bytes()[i - 1]);
        let Some(end) = rest[i..].find(';') else { break };
        if !word {
            rest_of_code.push_str(&rest[..i + 4]);
            rest = &rest[i + 4..];
            continue;
        }
        let before = rest[..i].trim_end();
        let public = before.ends_with("pub") || before.ends_with(')') && before.contains("pub(");
        rest_of_code.push_str(&rest[..i]);
        expand("", &rest[i + 4..i + end], &mut |path, name| {
            if let Some(p) = absolute(&module, children, &path) {
                if public {
                    reexports.insert(name, p);
                } else {
                    uses.push(p);
                }
            }
        });
        rest = &rest[i + end..];
    }
    rest_of_code.push_str(rest);
    // Inline paths: `crate::a::b`, `super::a`, `child::item`.
    let b = rest_of_code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) && (i == 0 || !is_ident(b[i - 1]) && b[i - 1] != b':') {
            let len = rest_of_code[i..]
                .bytes()
                .take_while(|&c| is_ident(c) || c == b':')
                .count();
            let path = &rest_of_code[i..i + len];
            if path.contains("::")
                && let Some(p) = absolute(&module, children, path)
            {
                uses.push(p);
            }
            i += len.max(1);
        } else {
            i += 1;
        }
    }
    File {
        module,
        uses,
        reexports,
    }
}

/// Every file of `src/`.
fn crate_files() -> Vec<File> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let modules: Vec<ModPath> = paths.iter().map(|f| module_of(&src, f)).collect();
    paths
        .iter()
        .zip(&modules)
        .map(|(f, m)| {
            let children = modules
                .iter()
                .filter(|c| c.len() == m.len() + 1 && c[..m.len()] == m[..])
                .map(|c| c[m.len()].clone())
                .collect();
            read(m.clone(), &children, &code(&std::fs::read_to_string(f).unwrap()))
        })
        .collect()
}

/// The module that defines what `path` names: the longest module prefix,
/// followed through that module's re-exports.
fn defining_module(files: &BTreeMap<ModPath, &File>, path: &[String], depth: usize) -> ModPath {
    let mut m = Vec::new();
    let mut i = 0;
    while i < path.len() {
        let mut next = m.clone();
        next.push(path[i].clone());
        if !files.contains_key(&next) {
            break;
        }
        m = next;
        i += 1;
    }
    if depth < 16
        && i < path.len()
        && let Some(target) = files.get(&m).and_then(|f| f.reexports.get(&path[i]))
    {
        let mut through = target.clone();
        through.extend(path[i + 1..].iter().cloned());
        return defining_module(files, &through, depth + 1);
    }
    m
}

/// Module → the modules it imports from, at the level of whole files.
fn graph(files: &[File]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<ModPath, &File> = files.iter().map(|f| (f.module.clone(), f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        for u in &f.uses {
            let to = defining_module(&by_module, u, 0);
            if !to.is_empty() && to != f.module {
                edges.entry(f.module.join("/")).or_default().insert(to.join("/"));
            }
        }
    }
    edges
}

/// Strongly connected components of more than one node (Kosaraju).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit<'a>(
        n: &'a String,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<&'a String>,
        order: &mut Vec<&'a String>,
    ) {
        if !seen.insert(n) {
            return;
        }
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, seen, order);
        }
        order.push(n);
    }
    for n in &nodes {
        visit(n, edges, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (a, bs) in edges {
        for b in bs {
            reversed.entry(b).or_default().push(a);
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for n in order.into_iter().rev() {
        if assigned.contains(n) {
            continue;
        }
        let mut comp = Vec::new();
        let mut stack = vec![n];
        while let Some(x) = stack.pop() {
            if assigned.insert(x) {
                comp.push(x.clone());
                stack.extend(reversed.get(x).into_iter().flatten().copied());
            }
        }
        if comp.len() > 1 {
            comp.sort();
            out.push(comp);
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let mut wrong = Vec::new();
    for (from, tos) in graph(&crate_files()) {
        let top = |m: &str| m.split('/').next().unwrap().to_string();
        let Some(mine) = layer(&top(&from)) else {
            wrong.push(format!("src/{}: not placed in a layer (add it to LAYERS)", top(&from)));
            continue;
        };
        for to in tos {
            if layer(&top(&to)).is_some_and(|theirs| theirs > mine) {
                wrong.push(format!("{from} imports {to}"));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "imports against the layering:\n{}", wrong.join("\n"));
}

#[test]
fn no_import_cycles() {
    let edges = graph(&crate_files());
    let found: Vec<String> = cycles(&edges).into_iter().map(|c| c.join(" <-> ")).collect();
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The checks find what they are for, written as the code writes it: an
/// upward import, a cycle through `super::` and a child module's path, and
/// a name used through its parent's re-export.
#[test]
fn the_checks_see_cycles_upward_imports_and_reexports() {
    let none = BTreeSet::new();
    let config = read(
        vec!["config".into()],
        &none,
        &code(
            "use crate::{agent::queues::X, sys};\n// crate::ops in a comment\nfn f() { crate::walk::go(\"crate::ops\"); }",
        ),
    );
    let named: Vec<String> = config.uses.iter().map(|r| r.join("::")).collect();
    assert_eq!(named, ["agent::queues::X", "sys", "walk::go"]);
    let kids: BTreeSet<String> = ["x".into(), "y".into()].into();
    let files = vec![
        read(vec!["agent".into()], &kids, &code("pub use x::T;\nfn f() { y::g(); }")),
        read(vec!["agent".into(), "x".into()], &none, &code("pub struct T;")),
        read(
            vec!["agent".into(), "y".into()],
            &none,
            &code("use super::T;\npub fn g() {}"),
        ),
    ];
    let edges = graph(&files);
    // `agent` calls into y; y's `super::T` is x's type, not agent's.
    assert_eq!(edges["agent"], ["agent/y".to_string()].into());
    assert_eq!(edges["agent/y"], ["agent/x".to_string()].into());
    assert!(cycles(&edges).is_empty());
    let looped = vec![
        read(vec!["a".into()], &none, &code("use crate::b::B;\npub struct A;")),
        read(vec!["b".into()], &none, &code("pub struct B(crate::a::A);")),
    ];
    assert_eq!(cycles(&graph(&looped)), [["a", "b"]]);
}
