//! The architecture, checked: which top-level module may use which.
//!
//! Reads the crate's own sources (non-test code) and fails when Kubernetes types appear outside
//! `adapter/kube`, when the domain imports a web or Kubernetes crate, or when two top-level
//! modules of `src/` import each other, directly or through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its top-level module and its non-test text.
fn sources() -> Vec<(PathBuf, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).expect("under src").to_path_buf();
                let first = relative.components().next().expect("a component").as_os_str().to_string_lossy();
                let module = first.trim_end_matches(".rs").to_owned();
                let text = std::fs::read_to_string(&path).expect("source is UTF-8");
                // Unit tests sit at the bottom of each file; they may use anything.
                let code = match text.find("#[cfg(test)]\nmod tests") {
                    Some(at) => &text[..at],
                    None => &text,
                };
                let code = without_comments(code);
                files.push((relative, module, code));
            }
        }
    }
    files
}

/// The code without `//` comments (doc comments may name anything).
fn without_comments(code: &str) -> String {
    code.lines()
        .map(|line| match line.find("//") {
            // `://` is a URL inside a string, not a comment.
            Some(at) if !line[..at].ends_with(':') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths into the Kubernetes crates, spelled in pieces so that this file itself does not show
/// up when someone greps the tree for them.
const KUBE_PATH: &str = concat!("kube", "::");
const K8S_OPENAPI: &str = concat!("k8s", "_openapi");

/// True when `code` names the kube or k8s-openapi crates (not this crate's `adapter/kube`).
fn names_kubernetes_crates(code: &str) -> bool {
    let bytes = code.as_bytes();
    [KUBE_PATH, K8S_OPENAPI].iter().any(|needle| {
        code.match_indices(needle).any(|(at, _)| {
            let before = at.checked_sub(1).map(|i| bytes[i]);
            !matches!(before, Some(b) if b == b':' || b == b'_' || b.is_ascii_alphanumeric())
        })
    })
}

/// The top-level modules a piece of code names through `crate::`.
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        used.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            used.extend(first_ident(&item));
        } else {
            used.extend(first_ident(rest));
        }
    }
    used
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

#[test]
fn kubernetes_types_appear_only_in_the_kube_adapter() {
    let outside: Vec<_> = sources()
        .into_iter()
        .filter(|(path, module, code)| {
            !path.starts_with("adapter/kube") && module != "layering" && names_kubernetes_crates(code)
        })
        .map(|(path, _, _)| path)
        .collect();
    assert!(outside.is_empty(), "the kube or k8s-openapi crates used outside src/adapter/kube: {outside:?}");
}

#[test]
fn the_domain_imports_neither_axum_nor_kube() {
    for (path, module, code) in sources() {
        if module == "identity" {
            assert!(!names_kubernetes_crates(&code), "{} uses the kube or k8s-openapi crates", path.display());
            for banned in ["axum::", "hyper::", "crate::http", "crate::adapter", "crate::config", "crate::client"] {
                assert!(!code.contains(banned), "{} uses {banned}", path.display());
            }
        }
    }
}

#[test]
fn top_level_modules_import_each_other_in_one_direction_only() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files = sources();
    let modules: BTreeSet<String> = files.iter().map(|(_, module, _)| module.clone()).collect();
    for (_, module, code) in &files {
        let edges = graph.entry(module.clone()).or_default();
        for used in used_modules(code) {
            if used != *module && modules.contains(&used) {
                edges.insert(used);
            }
        }
    }
    // Depth-first search for a cycle, reporting its path.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle between top-level modules: {}\n(graph: {graph:?})", cycle.join(" -> "));
        }
    }
}

#[test]
fn only_the_kubernetes_crates_count_as_kubernetes() {
    assert!(names_kubernetes_crates(&format!("use {KUBE_PATH}Api;")));
    assert!(names_kubernetes_crates(&format!("let x: {K8S_OPENAPI}::ByteString;")));
    assert!(!names_kubernetes_crates(&format!("use crate::adapter::{KUBE_PATH}KubeCtx;")));
    assert!(!without_comments(&format!("let a = 1; // {KUBE_PATH}Api")).contains("kube"));
    assert_eq!(without_comments("let url = \"https://x\";"), "let url = \"https://x\";");
}

#[test]
fn the_import_scanner_reads_grouped_and_nested_paths() {
    let used = used_modules("use crate::{a::B, b, c::{d, e}};\nlet x = crate::f::g();\nuse crate::{self as _};");
    assert_eq!(used, ["a", "b", "c", "f"].into_iter().map(String::from).collect());
}
