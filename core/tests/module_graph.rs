//! Every crate's modules form a DAG; core's above all: the data types at the bottom, the role
//! traits above them, config and registry above those, the engine on top. This test reads every
//! source file of each crate of the workspace, follows each `crate::…` and `super::…` path (grouped `use` lists included) to the
//! file that defines it, and fails naming every circle it finds with the paths that tie it.
//! Test modules are left out: a test may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module of the crate, as its path from the root (`["config", "load"]`).
type Module = Vec<String>;

fn modules(dir: &Path, prefix: &Module, out: &mut BTreeMap<Module, PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .to_string();
        if path.is_dir() {
            let mut m = prefix.clone();
            m.push(name);
            modules(&path, &m, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut m = prefix.clone();
            if !matches!(stem, "mod" | "lib" | "main") {
                m.push(stem.to_string());
            }
            if stem == "tests" {
                continue;
            }
            out.insert(m, path);
        }
    }
}

/// The source without comments and without its inline test module.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            if let Some(next) = lines.peek() {
                if next.trim_start().starts_with("mod tests") {
                    break;
                }
            }
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths written after `start` in `code` (at byte `at`), a `{…}` group expanded.
fn paths_at(code: &str, at: usize, base: Module, out: &mut Vec<Module>) {
    let bytes = code.as_bytes();
    let mut i = at;
    let mut path = base;
    loop {
        while i < bytes.len() && (bytes[i] as char).is_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            // A group: split at top-level commas.
            let mut depth = 0;
            let mut start = i + 1;
            let mut j = i;
            while j < bytes.len() {
                match bytes[j] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            paths_at(code, start, path.clone(), out);
                            return;
                        }
                    }
                    b',' if depth == 1 => {
                        paths_at(code, start, path.clone(), out);
                        start = j + 1;
                    }
                    _ => {}
                }
                j += 1;
            }
            return;
        }
        let begin = i;
        while i < bytes.len() && is_ident(bytes[i] as char) {
            i += 1;
        }
        if i == begin {
            out.push(path);
            return;
        }
        path.push(code[begin..i].to_string());
        if code[i..].starts_with("::") {
            i += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// Every module path `file` (module `me`) names through `crate::` or `super::`.
/// `me` is the module for `super`: for `a/mod.rs` it is `a` one level deeper.
fn references(code: &str, me: &Module) -> Vec<Module> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        paths_at(code, at + "crate::".len(), Vec::new(), &mut out);
    }
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let mut base = me.clone();
        base.pop();
        paths_at(code, at + "super::".len(), base, &mut out);
    }
    out
}

/// The file module that `path` lands in: its longest prefix that is a module of the crate (the
/// root for a name the root defines or re-exports).
fn resolve<'a>(path: &Module, known: &'a BTreeMap<Module, PathBuf>) -> Option<&'a Module> {
    (0..=path.len())
        .rev()
        .find_map(|n| known.get_key_value(&path[..n].to_vec()).map(|(k, _)| k))
}

/// `code` without its `pub use …;` items: a face that hands names on imports nothing.
fn without_reexports(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest
        .find("pub use ")
        .or_else(|| rest.find("pub(crate) use "))
    {
        let starts_item = rest[..at]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find(';') else {
            return out;
        };
        if !starts_item {
            out.push_str(&rest[at..at + end + 1]);
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Strongly connected components of more than one module (Tarjan).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in &s.edges[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

/// The import graph of the crate rooted at `src`: module → the modules it names.
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut known = BTreeMap::new();
    modules(src, &Vec::new(), &mut known);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, file) in &known {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let is_mod = file.file_name().is_some_and(|n| n == "mod.rs");
        let mut me_for_super = m.clone();
        if is_mod {
            // In `a/mod.rs` (module `a`), `super` is `a`'s parent: make `a` look one deeper.
            me_for_super.push(String::new());
        }
        let code = code_of(&text);
        let mut paths = references(&code, &me_for_super);
        // A crate root or a folder's mod.rs names its own children without `crate::`: each use
        // of one outside a re-export (`pub use`, which only hands names on) is an import.
        let children: Vec<&String> = known
            .keys()
            .filter(|k| k.len() == m.len() + 1 && k.starts_with(m))
            .map(|k| &k[m.len()])
            .collect();
        let own = without_reexports(&code);
        for child in children {
            for (at, _) in own.match_indices(&format!("{child}::")) {
                let before = own[..at].chars().next_back();
                if !before.is_some_and(|c| is_ident(c) || c == ':') {
                    paths_at(&own, at, m.clone(), &mut paths);
                }
            }
        }
        let targets = edges.entry(m.clone()).or_default();
        for path in paths {
            if let Some(t) = resolve(&path, &known) {
                if t != m {
                    targets.insert(t.clone());
                }
            }
        }
    }
    edges
}

/// Each circle of the crate at `src`, with the imports that tie it, one per line.
fn circle_report(src: &Path) -> String {
    let edges = graph(src);
    let mut report = String::new();
    for comp in circles(&edges) {
        report.push_str(&format!("circle in {}:\n", src.display()));
        for a in &comp {
            for b in &edges[a] {
                if comp.contains(b) {
                    report.push_str(&format!("  {} -> {}\n", name(a), name(b)));
                }
            }
        }
    }
    report
}

/// The `src` folders of the workspace's crates (a folder with a Cargo.toml and a src/).
fn crate_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
        out.push(dir.join("src"));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let n = e.file_name().to_string_lossy().to_string();
        if p.is_dir() && !n.starts_with('.') && n != "target" && n != "src" {
            crate_sources(&p, out);
        }
    }
}

#[test]
fn core_modules_import_each_other_in_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(
        edges.len() > 20,
        "read only {} modules of {}: the reader is broken",
        edges.len(),
        src.display()
    );
    let report = circle_report(&src);
    assert!(
        report.is_empty(),
        "core's modules import each other:\n{report}"
    );
}

#[test]
fn no_crate_of_the_workspace_has_an_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sources = Vec::new();
    crate_sources(&root, &mut sources);
    assert!(sources.len() > 20, "found only {sources:?}");
    let report: String = sources.iter().map(|s| circle_report(s)).collect();
    assert!(
        report.is_empty(),
        "modules that import each other:\n{report}"
    );
}

#[test]
fn the_reader_sees_grouped_nested_and_super_paths() {
    let dir = std::env::temp_dir().join(format!("trawl-modgraph-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a; mod b;\n").unwrap();
    std::fs::write(
        dir.join("a.rs"),
        "use crate::{b::{c::X, d}, a};\n// use crate::e;\n",
    )
    .unwrap();
    std::fs::write(dir.join("b/mod.rs"), "pub mod c; pub mod d;\n").unwrap();
    std::fs::write(dir.join("b/c.rs"), "use super::d::Y;\n").unwrap();
    std::fs::write(
        dir.join("b/d.rs"),
        "fn f() { crate::a::g(); }\n#[cfg(test)]\nmod tests { use crate::b::c; }\n",
    )
    .unwrap();
    let edges = graph(&dir);
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    assert_eq!(
        edges[&m("a")],
        BTreeSet::from([m("b::c"), m("b::d")]),
        "a's imports"
    );
    assert_eq!(edges[&m("b::c")], BTreeSet::from([m("b::d")]));
    assert_eq!(
        edges[&m("b::d")],
        BTreeSet::from([m("a")]),
        "test module left out"
    );
    let found = circles(&edges);
    assert_eq!(found, vec![vec![m("a"), m("b::c"), m("b::d")]], "{edges:?}");

    // A root that calls into a child which imports from the root is a circle; a root that only
    // re-exports is not.
    std::fs::write(
        dir.join("lib.rs"),
        "mod a; mod b;\npub use a::X;\nfn go() { b::d::f(); }\n",
    )
    .unwrap();
    std::fs::write(dir.join("a.rs"), "pub struct X;\n").unwrap();
    std::fs::write(dir.join("b/c.rs"), "").unwrap();
    std::fs::write(dir.join("b/d.rs"), "use crate::Y;\n").unwrap();
    let edges = graph(&dir);
    assert_eq!(
        edges[&Vec::new()],
        BTreeSet::from([m("b::d")]),
        "the root's own call"
    );
    assert_eq!(
        circles(&edges),
        vec![vec![Vec::new(), m("b::d")]],
        "{edges:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
