//! The crate's top-level modules should form a graph without cycles: arrows only point down, so
//! each component can be read, tested and replaced on its own. This test reads every `crate::…`
//! reference in the code of `src/` (comments do not count) and finds the cycles between
//! top-level modules.
//!
//! Any cycle fails, naming the modules and edges that close it. [`STILL_TANGLED`] (empty since
//! issue #14's refactor) is where a cycle would have to be admitted, in review, and a listed
//! module that is no longer in a cycle fails too, so the list can only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/outbox/codec.rs` → `outbox`), or `None` for
/// the crate root and the binaries.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Top-level module → the top-level modules it refers to through `crate::`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(from) = top_module(&src, &file) else {
            continue;
        };
        let text: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let edges = graph.entry(from.clone()).or_default();
        // `crate::name` anywhere (use lines, paths in code, doc links) and `use crate::{a, b}`.
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let names: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or("").to_string())
                    .collect()
            } else {
                vec![rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()]
            };
            for name in names {
                if !name.is_empty() && name != from && name != "self" {
                    edges.insert(name);
                }
            }
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !graph.contains_key(w) {
                    continue; // an external name such as `crate::VERSION`
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}

/// Modules allowed to be in an import cycle: none. A module listed here would have to leave
/// the cycle again (the test below says when one has).
const STILL_TANGLED: &[&str] = &[];

#[test]
fn no_import_cycle_beyond_the_known_tangle() {
    let graph = module_graph();
    let found = cycles(&graph);
    let explain = |c: &Vec<String>| {
        let edges: Vec<String> = c
            .iter()
            .flat_map(|m| {
                graph[m]
                    .iter()
                    .filter(|to| c.contains(to))
                    .map(move |to| format!("{m} → {to}"))
            })
            .collect();
        format!("{{{}}}: {}", c.join(", "), edges.join(", "))
    };
    let in_cycles: BTreeSet<&str> = found.iter().flatten().map(String::as_str).collect();
    let new: Vec<&str> = in_cycles
        .iter()
        .copied()
        .filter(|m| !STILL_TANGLED.contains(m))
        .collect();
    assert!(
        new.is_empty(),
        "new import cycles through {new:?} (make shared types a leaf module such as `core`, or \
         move the code that needs both up into `pipeline`):\n{}",
        found.iter().map(explain).collect::<Vec<_>>().join("\n")
    );
    let untangled: Vec<&&str> = STILL_TANGLED
        .iter()
        .filter(|m| !in_cycles.contains(**m))
        .collect();
    assert!(
        untangled.is_empty(),
        "{untangled:?} are in no cycle any more: take them off STILL_TANGLED"
    );
}
