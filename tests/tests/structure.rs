//! The modules of each crate form a tree: no two modules use each other,
//! directly or around a circle. A module "uses" a sibling when its code or
//! its doc comments (plain comments and its `#[cfg(test)]` part left out)
//! name `crate::sibling` or `super::sibling`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every directory of sibling modules in the workspace.
fn module_directories() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut directories = Vec::new();
    let mut pending = vec![
        root.join("projections/src"),
        root.join("proto/src"),
        root.join("tests/src"),
    ];
    for service in std::fs::read_dir(root.join("services")).expect("services/") {
        pending.push(service.expect("an entry").path().join("src"));
    }
    while let Some(directory) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                pending.push(path);
            }
        }
        directories.push(directory);
    }
    directories
}

/// The modules of one directory and the siblings each one uses.
fn uses(directory: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let sources: BTreeMap<String, String> = std::fs::read_dir(directory)
        .expect("a module directory")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "rs").then(|| (name, std::fs::read_to_string(&path).unwrap()))
        })
        .collect();
    let mut graph = BTreeMap::new();
    for (module, source) in &sources {
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut used = BTreeSet::new();
        // Doc comments count (an intra-doc link is a use); plain comments do not.
        let plain_comment = |line: &str| {
            let line = line.trim_start();
            line.starts_with("//") && !line.starts_with("///") && !line.starts_with("//!")
        };
        for line in code.lines().filter(|line| !plain_comment(line)) {
            for prefix in ["crate::", "super::"] {
                for (at, _) in line.match_indices(prefix) {
                    let name: String = line[at + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if name != *module
                        && sources.contains_key(&name)
                        && !["lib", "main", "mod"].contains(&name.as_str())
                    {
                        used.insert(name);
                    }
                }
            }
        }
        graph.insert(module.clone(), used);
    }
    graph
}

/// A circle of modules, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == module) {
            let mut found = path[start..].to_vec();
            found.push(module.to_owned());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in &graph[module] {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_two_modules_use_each_other() {
    let mut circles = Vec::new();
    for directory in module_directories() {
        if let Some(found) = circle(&uses(&directory)) {
            circles.push(format!("{}: {}", directory.display(), found.join(" → ")));
        }
    }
    assert!(
        circles.is_empty(),
        "modules in a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_check_finds_a_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("apply", &["versions"][..]),
        ("versions", &["seek"][..]),
        ("seek", &["apply"][..]),
        ("query", &[][..]),
    ]
    .into_iter()
    .map(|(module, used)| {
        (
            module.to_owned(),
            used.iter().map(|name| name.to_string()).collect(),
        )
    })
    .collect();
    assert_eq!(
        circle(&graph),
        Some(vec![
            "apply".into(),
            "versions".into(),
            "seek".into(),
            "apply".into()
        ])
    );
}
