//! The crate's structure, checked from its source: every module imports
//! only from its own layer or the layers below it (docs/architecture.md),
//! and nothing imports in a circle — between the top-level modules, and
//! between the agent's and the command line's parts.
//!
//! Imports are read from the text of `src/` (`use crate::…`, `crate::…`
//! paths, `super::…`), without comments and without the `#[cfg(test)]`
//! module at the end of a file (tests may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use its own layer and those
/// below; a new top-level module must be placed here.
const LAYERS: &[&[&str]] = &[
    &["sys"],
    &["config"],
    &["entry", "rules", "batch", "task", "testtree"],
    &["walk", "output", "progress"],
    &["scan", "snapdiff", "endpoint", "gpfs"],
    &["ops"],
    &["agent"],
    &["cli", "main"],
];

/// Modules whose parts must not import each other in a circle.
const PARTS_OF: &[&str] = &["agent", "agent/tasks", "cli"];

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
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
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if parts == ["main"] {
        return vec!["main".into()];
    }
    parts
}

/// The code of a file without comments, string and char literals, and
/// its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
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

/// Every path a piece of code names from `crate::` or `super::`, resolved
/// to absolute module-path prefixes (`["agent", "celery", "TaskMessage"]`).
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // Expand `use` trees first, so `use crate::{a::b, c}` counts as both.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let word_start = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        let after = &rest[i + 4..];
        if !word_start {
            rest = after;
            continue;
        }
        let Some(end) = after.find(';') else { break };
        expand("", &after[..end], &mut |p| out.push(p));
        rest = &after[end..];
    }
    // Then every inline `crate::a::b` or `super::a` path.
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path);
        }
    }
    out.into_iter()
        .filter_map(|p| resolve(module, &p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Calls `f` with every path of a use tree (`crate::{a, b::{c, d}}`).
fn expand(prefix: &str, tree: &str, f: &mut impl FnMut(String)) {
    let tree = tree.trim();
    match tree.find('{') {
        None => f(format!("{prefix}{}", tree.split(" as ").next().unwrap().trim())),
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

fn resolve(module: &[String], path: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = path
        .split("::")
        .filter(|p| !p.is_empty() && *p != "self" && *p != "*")
        .collect();
    let mut base: Vec<String> = match parts.first() {
        Some(&"crate") => Vec::new(),
        Some(&"super") => module.to_vec(),
        _ => return None,
    };
    let mut rest = &parts[..];
    if rest.first() == Some(&"crate") {
        rest = &rest[1..];
    }
    while rest.first() == Some(&"super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().map(|s| s.to_string()));
    Some(base)
}

/// The node a module path counts as, seen at the level of `parent`'s
/// parts: `agent/tasks/navigate/Navigation` under `agent` is `agent/tasks`.
fn node(path: &[String], parent: &[String]) -> Option<String> {
    if path.len() > parent.len() && path[..parent.len()] == *parent {
        Some(path[..=parent.len()].join("/"))
    } else if path == parent {
        Some(parent.join("/"))
    } else {
        None
    }
}

/// Strongly connected components of more than one node.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: order by finish time, then walk the reversed graph.
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

/// Module → modules it names, at the level of `parent`'s parts.
fn graph(files: &[(Vec<String>, Vec<Vec<String>>)], parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, refs) in files {
        let Some(from) = node(module, parent) else { continue };
        for r in refs {
            if let Some(to) = node(r, parent)
                && to != from
            {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

fn crate_files() -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .iter()
        .map(|f| {
            let module = module_of(&src, f);
            let text = std::fs::read_to_string(f).unwrap();
            // The binary names the library as `ferry::`; its own modules
            // as `crate::`/`super::`, like the library.
            let refs = references(&module, &code(&text));
            (module, refs)
        })
        .collect()
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let files = crate_files();
    let mut wrong = Vec::new();
    for (module, refs) in &files {
        let Some(top) = module.first() else { continue };
        let Some(mine) = layer(top) else {
            wrong.push(format!("src/{top}: not placed in a layer (add it to LAYERS)"));
            continue;
        };
        for r in refs {
            if let Some(theirs) = layer(&r[0])
                && theirs > mine
            {
                wrong.push(format!("{} imports {}", module.join("/"), r.join("::")));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "imports against the layering:\n{}", wrong.join("\n"));
}

#[test]
fn no_import_cycles() {
    let files = crate_files();
    let mut found = Vec::new();
    let parents: Vec<Vec<String>> = std::iter::once(Vec::new())
        .chain(PARTS_OF.iter().map(|p| p.split('/').map(String::from).collect()))
        .collect();
    for parent in &parents {
        for c in cycles(&graph(&files, parent)) {
            found.push(c.join(" <-> "));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The checker itself finds what it is for: a cycle and an upward import
/// written as the code writes them.
#[test]
fn the_checks_see_cycles_and_upward_imports() {
    let a = references(
        &["config".into()],
        &code("use crate::{agent::queues::X, sys};\n// crate::ops in a comment\nfn f() { crate::walk::go(); }"),
    );
    let named: Vec<String> = a.iter().map(|r| r.join("::")).collect();
    assert_eq!(named, ["agent::queues::X", "sys", "walk::go"]);
    let files = vec![
        (
            vec!["agent".into(), "x".into()],
            vec![vec!["agent".into(), "y".into(), "T".into()]],
        ),
        (
            vec!["agent".into(), "y".into()],
            references(&["agent".into(), "y".into()], "use super::x::U;"),
        ),
    ];
    assert_eq!(cycles(&graph(&files, &["agent".into()])), [["agent/x", "agent/y"]]);
}
