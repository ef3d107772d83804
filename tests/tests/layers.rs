//! Layers without circles: the modules of the library and of the daemons crate import each
//! other (`crate::...`, `super::...`, `self::...`) along a graph with no cycle, so each can be
//! read, tested and changed knowing only what sits beneath it.
//!
//! The check is made at every level of the module tree: the top-level modules of a crate, and
//! the children of every folder module (the families of `tools/`, the layers of `executor/`).
//! A folder's own `mod.rs`, like the crate root `lib.rs`, frames its children (it declares
//! them, and they may use what it defines) and is not part of its level's graph. A child
//! reaching a sibling by any path (`crate::tools::http`, `super::super::http`) is an edge.
//!
//! The edges are read from the source: every `crate::`, `super::` and `self::` path outside
//! comments and test modules, including the names inside `use crate::{a, b::{c, d}}` groups.
//! Binaries (`src/bin/`) and the crate root sit above every module and are not part of any
//! graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use uni_wizard_tests::rust_files;

/// module -> module it imports -> one place that shows the edge (`file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The path of the module a source file defines (`a/b.rs` and `a/b/mod.rs` are `[a, b]`), or
/// `None` for the crate root and binaries.
fn module_path(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if matches!(parts.first().map(String::as_str), Some("lib.rs" | "main.rs" | "bin")) {
        return None;
    }
    let file_name = parts.pop()?;
    if file_name != "mod.rs" {
        parts.push(file_name.strip_suffix(".rs").unwrap_or(&file_name).to_owned());
    }
    Some(parts)
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

/// Where each `crate::`, `super::` or `self::` path in `code` leads, as module paths from
/// the crate root (`super` resolved against `here`, the path of the file's module), with the
/// offset of the path; every item of a group (`crate::{a, b::{c, d}}`, spanning lines or not)
/// is a path of its own. The paths may run on into items (`[tools, ToolEnv]`); only their
/// module prefixes make edges.
fn imported_paths(code: &str, here: &[String]) -> Vec<(usize, Vec<String>)> {
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        // A path starts at `crate`, `super` or `self` not preceded by a name character, `$` or
        // `::` (`other_crate::`, `$crate::`, `a::self` are not roots of this crate's paths).
        let starts = ["crate::", "super::", "self::"].into_iter().find(|p| bytes[at..].starts_with(p.as_bytes()));
        let preceded = at > 0 && (ident(bytes[at - 1]) || bytes[at - 1] == b'$' || bytes[at - 1] == b':');
        let Some(first) = starts.filter(|_| !preceded) else {
            at += 1;
            continue;
        };
        let start = at;
        let mut base: Vec<String> = if first == "crate::" { Vec::new() } else { here.to_vec() };
        at += first.len();
        if first == "super::" {
            base.pop();
            while bytes[at..].starts_with(b"super::") {
                base.pop();
                at += "super::".len();
            }
        }
        let mut paths = Vec::new();
        at = path_tree(code, at, base, &mut paths);
        found.extend(paths.into_iter().map(|p| (start, p)));
    }
    found
}

/// Reads `seg::seg::...` or a `{...}` group from `at`, pushing each full path (after `base`)
/// into `out`; returns where the path ends.
fn path_tree(code: &str, mut at: usize, mut base: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes = code.as_bytes();
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        at = skip_space(at);
        if bytes.get(at) == Some(&b'{') {
            at += 1;
            loop {
                at = path_tree(code, at, base.clone(), out);
                // Past anything else in the item (`as name`) to its `,` or the closing `}`.
                while at < bytes.len() && bytes[at] != b',' && bytes[at] != b'}' {
                    at += 1;
                }
                match bytes.get(at) {
                    Some(b',') => at += 1,
                    Some(b'}') => return at + 1,
                    _ => return at,
                }
            }
        }
        let end = at + bytes[at..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
        // Name characters are ASCII, so `at..end` falls on character boundaries.
        let segment = &code[at..end];
        if !segment.is_empty() && segment != "self" {
            base.push(segment.to_owned());
        }
        at = end;
        if segment.is_empty() || !bytes[at..].starts_with(b"::") {
            out.push(base);
            return at;
        }
        at += 2;
    }
}

/// The import graph between the children of the module `parent` (`[]`: the top-level modules)
/// of the crate whose sources are in `src`.
fn graph_of(src: &Path, parent: &[String]) -> Graph {
    let files: Vec<(std::path::PathBuf, Vec<String>)> =
        rust_files(src).into_iter().filter_map(|f| module_path(src, &f).map(|m| (f, m))).collect();
    let child =
        |path: &[String]| (path.len() > parent.len() && path.starts_with(parent)).then(|| path[parent.len()].clone());
    let modules: BTreeSet<String> = files.iter().filter_map(|(_, m)| child(m)).collect();
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for (file, here) in &files {
        let Some(from) = child(here) else { continue };
        let text = std::fs::read_to_string(file).expect("read source");
        let joined: String = layered_code(&text).iter().map(|l| format!("{l}\n")).collect();
        for (at, path) in imported_paths(&joined, here) {
            let Some(to) = child(&path) else { continue };
            if to != from && modules.contains(&to) {
                let line = joined[..at].matches('\n').count() + 1;
                graph.get_mut(&from).expect("module").entry(to).or_insert(format!("{}:{line}", file.display()));
            }
        }
    }
    graph
}

/// The import graph between the top-level modules of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    graph_of(src, &[])
}

/// Every folder module of the crate in `src` that has children: `[]` (the crate root), then
/// each folder, e.g. `[tools]`, `[tools, git]`.
fn parents(src: &Path) -> BTreeSet<Vec<String>> {
    rust_files(src)
        .iter()
        .filter_map(|f| module_path(src, f))
        .flat_map(|m| (0..m.len()).map(move |n| m[..n].to_vec()))
        .collect()
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

/// Checks every level of the crate in `crate_dir` for import cycles and returns each level's
/// graph by its parent (`[]`: the top-level modules).
fn assert_acyclic(crate_dir: &str) -> BTreeMap<Vec<String>, Graph> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(crate_dir).join("src");
    let mut levels = BTreeMap::new();
    let mut problems = Vec::new();
    for parent in parents(&src) {
        let g = graph_of(&src, &parent);
        let found = cycles(&g);
        if !found.is_empty() {
            let level = if parent.is_empty() {
                "top-level modules".to_owned()
            } else {
                format!("the modules in {}", parent.join("::"))
            };
            let shown = found.iter().map(|c| c.join("\n  ")).collect::<Vec<_>>().join("\n\n  ");
            problems.push(format!("{crate_dir}: import cycles between {level}:\n  {shown}"));
        }
        levels.insert(parent, g);
    }
    let top = &levels[&Vec::new()];
    assert!(top.len() > 5, "{crate_dir}: found only {} modules: {:?}", top.len(), top.keys());
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    levels
}

/// The library's modules import each other without a cycle at every level: the top-level
/// modules, the tool families in `tools/`, the files of each family; and the contract module
/// sits beneath the tools, importing nothing but errors.
#[test]
fn library_modules_have_no_import_cycle() {
    let levels = assert_acyclic("uni_wizard");
    let top = &levels[&Vec::new()];
    assert!(top["tools"].contains_key("contract"), "the tools name their contracts: {:?}", top["tools"]);
    let above: Vec<_> = top["contract"].iter().filter(|(m, _)| *m != "error").collect();
    assert!(above.is_empty(), "contract imports more than errors: {above:?}");
    let families = &levels[&vec!["tools".to_owned()]];
    assert_eq!(families.keys().collect::<Vec<_>>(), ["file", "git", "gitea", "http", "system"], "{families:?}");
}

/// The daemons crate's modules import each other without a cycle at every level.
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

/// The check sees the modules inside a folder: a sibling reached through `super::super::`,
/// through a `crate::` group nested in a group, or through `self::` from the folder's own
/// `mod.rs` (which frames the level and is no node of it), and resolves `super::` to the
/// right module.
#[test]
fn the_check_finds_a_cycle_inside_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod tools;\n").expect("write");
    for family in ["tools/git", "tools/http", "tools/gitea"] {
        std::fs::create_dir_all(src.join(family)).expect("mkdir");
    }
    std::fs::write(src.join("tools/mod.rs"), "use self::git::Run;\npub struct ToolEnv;\n").expect("write");
    std::fs::write(src.join("tools/git/mod.rs"), "use super::ToolEnv;\npub mod status;\n").expect("write");
    std::fs::write(src.join("tools/git/status.rs"), "use super::super::http::Client;\n").expect("write");
    std::fs::write(src.join("tools/http/mod.rs"), "use crate::tools::ToolEnv;\n").expect("write");
    std::fs::write(src.join("tools/gitea/mod.rs"), "use crate::{error::E, tools::{ToolEnv, http::{self, Client}}};\n")
        .expect("write");
    let g = graph_of(src, &["tools".to_owned()]);
    assert!(cycles(&g).is_empty(), "no cycle yet: {g:?}");
    assert_eq!(g["git"].keys().collect::<Vec<_>>(), ["http"], "{g:?}");
    assert_eq!(g["gitea"].keys().collect::<Vec<_>>(), ["http"], "{g:?}");
    assert!(g["http"].is_empty(), "{g:?}");
    assert!(parents(src).contains(&vec!["tools".to_owned(), "git".to_owned()]), "{:?}", parents(src));

    std::fs::write(src.join("tools/http/mod.rs"), "pub fn f() { let _ = super::git::status::X; }\n").expect("write");
    let found = cycles(&graph_of(src, &["tools".to_owned()]));
    assert_eq!(found.len(), 1, "{found:?}");
    let shown = found[0].join(" ");
    for edge in ["git -> http", "http -> git"] {
        assert!(shown.contains(edge), "{edge} missing from {shown}");
    }
}
