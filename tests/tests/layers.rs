//! Layers without circles: the top-level modules of the library and of the daemons crate
//! import each other (`crate::module`) along a graph with no cycle, so each can be read,
//! tested and changed knowing only what sits beneath it.
//!
//! The edges are read from the source: every `crate::name` path outside comments and test
//! modules, including the names inside `use crate::{a, b::c}` groups. Binaries (`src/bin/`)
//! and the crate root (`lib.rs`) sit above every module and are not part of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use uni_wizard_tests::rust_files;

/// module -> module it imports -> one place that shows the edge (`file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The top-level module a source file belongs to, or `None` for the crate root and binaries.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.strip_suffix(".rs").unwrap_or(f).to_owned()),
    }
}

/// The code of a file that counts for layering: without line comments, and cut before its
/// `#[cfg(test)] mod ...` (tests may reach anywhere).
fn layered_code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        // The line stays (without its comment), so line numbers stay true.
        out.push(code.to_owned());
    }
    out
}

/// The first path segment after every `crate::` in `code`, with the offset of that
/// `crate::`; the names inside groups (`crate::{a, b::c}`, spanning lines or not) included.
fn imported_modules(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut offset = 0;
    while let Some(at) = code[offset..].find("crate::") {
        let start = offset + at;
        offset = start + "crate::".len();
        // `other_crate::` or `$crate::` are not this crate's root.
        if code[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[offset..];
        let Some(group) = rest.strip_prefix('{') else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push((start, name));
            }
            continue;
        };
        // In a group, the first segment of each comma-separated item at depth 1.
        let (mut depth, mut segment, mut first) = (1, String::new(), true);
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 1 => {
                    if first && !segment.is_empty() {
                        found.push((start, std::mem::take(&mut segment)));
                    }
                    segment.clear();
                    first = true;
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                break;
            }
            if !first {
                continue;
            }
            if c.is_alphanumeric() || c == '_' {
                segment.push(c);
            } else if !segment.is_empty() {
                found.push((start, std::mem::take(&mut segment)));
                first = false;
            }
        }
        if first && !segment.is_empty() {
            found.push((start, segment));
        }
    }
    found
}

/// The import graph between the top-level modules of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    let modules: BTreeSet<String> = rust_files(src).iter().filter_map(|f| module_of(src, f)).collect();
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for file in rust_files(src) {
        let Some(from) = module_of(src, &file) else { continue };
        let text = std::fs::read_to_string(&file).expect("read source");
        let joined: String = layered_code(&text).iter().map(|l| format!("{l}\n")).collect();
        for (at, to) in imported_modules(&joined) {
            if to != from && modules.contains(&to) {
                let line = joined[..at].matches('\n').count() + 1;
                graph.get_mut(&from).expect("module").entry(to).or_insert(format!("{}:{line}", file.display()));
            }
        }
    }
    graph
}

/// Every cycle's modules (strongly connected components with more than one module), each
/// with the edges that close it.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on the reversed graph.
    fn visit<'a>(g: &'a Graph, n: &'a str, seen: &mut BTreeSet<&'a str>, order: &mut Vec<&'a str>) {
        if !seen.insert(n) {
            return;
        }
        for m in g.get(n).into_iter().flat_map(|e| e.keys()) {
            visit(g, m, seen, order);
        }
        order.push(n);
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for n in graph.keys() {
        visit(graph, n, &mut seen, &mut order);
    }
    let mut reversed: Graph = graph.keys().map(|k| (k.clone(), BTreeMap::new())).collect();
    for (from, edges) in graph {
        for (to, place) in edges {
            reversed.entry(to.clone()).or_default().insert(from.clone(), place.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for n in order.iter().rev() {
        let mut component = Vec::new();
        visit(&reversed, n, &mut assigned, &mut component);
        if component.len() > 1 {
            let members: BTreeSet<&str> = component.iter().copied().collect();
            let mut shown = Vec::new();
            for m in &members {
                for (to, place) in &graph[*m] {
                    if members.contains(to.as_str()) {
                        shown.push(format!("{m} -> {to} ({place})"));
                    }
                }
            }
            out.push(shown);
        }
    }
    out
}

fn assert_acyclic(crate_dir: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(crate_dir).join("src");
    let g = graph(&src);
    assert!(g.len() > 5, "{crate_dir}: found only {} modules: {:?}", g.len(), g.keys());
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "{crate_dir}: import cycles between top-level modules:\n{}",
        found.iter().map(|c| c.join("\n  ")).collect::<Vec<_>>().join("\n\n")
    );
}

/// The library's top-level modules import each other without a cycle.
#[test]
fn library_modules_have_no_import_cycle() {
    assert_acyclic("uni_wizard");
}

/// The daemons crate's top-level modules import each other without a cycle.
#[test]
fn daemon_modules_have_no_import_cycle() {
    assert_acyclic("daemons");
}

/// The check sees a cycle through a `use crate::{...}` group spanning lines and through an
/// inline path, and ignores comments, test modules and other crates' `crate::`.
#[test]
fn the_check_finds_a_cycle_and_ignores_what_does_not_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod b; pub mod c; use crate::a::X;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::{\n    error::E,\n    b::Y,\n};\n").expect("write");
    std::fs::create_dir(src.join("b")).expect("mkdir");
    std::fs::write(src.join("b/mod.rs"), "pub fn f() { let _ = crate::c::Z; }\n").expect("write");
    std::fs::write(
        src.join("c.rs"),
        "// crate::a::X in a comment\nfn g() { uni_wizard_crate::a::X; }\n#[cfg(test)]\nmod tests { use crate::a::X; }\n",
    )
    .expect("write");
    std::fs::write(src.join("error.rs"), "").expect("write");
    let g = graph(src);
    assert!(cycles(&g).is_empty(), "no cycle yet: {g:?}");
    assert_eq!(g["a"].keys().collect::<Vec<_>>(), ["b", "error"], "{g:?}");

    std::fs::write(src.join("c.rs"), "use crate::{error, a::{self, X}};\n").expect("write");
    let found = cycles(&graph(src));
    assert_eq!(found.len(), 1, "{found:?}");
    let shown = found[0].join(" ");
    for edge in ["a -> b", "b -> c", "c -> a"] {
        assert!(shown.contains(edge), "{edge} missing from {shown}");
    }
}
