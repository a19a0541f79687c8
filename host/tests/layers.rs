//! The crate's layers, as `src/lib.rs` names them, kept by a test: a
//! module may import from its own layer's module and from the layers
//! below it, never from a layer above, and the node and the center never
//! from each other.
//!
//! The check reads the sources: every `crate::` path (in a `use` tree or
//! inline) and every `super::` chain that climbs to the crate's root.
//! Comments are left out; strings are not, since none holds such a path.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The crate's top-level modules and their layers, lowest first. A module
/// may use its own top-level module and those of lower layers only.
const LAYERS: &[(&str, u8)] = &[
    ("shared", 1),
    ("registry", 2),
    ("node", 3),
    ("center", 3),
    ("cli", 4),
];

/// One import that breaks the layering.
#[derive(Debug, PartialEq)]
struct Breach {
    file: String,
    line: usize,
    from: &'static str,
    to: &'static str,
}

/// A module of one layer never imports from a layer above it.
#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut breaches = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(module) = module_path(relative) else {
            continue;
        };
        let text = fs::read_to_string(file).unwrap();
        checked += 1;
        breaches.extend(breaches_in(&relative.display().to_string(), &module, &text));
    }
    assert!(checked > 50, "only {checked} files read under {src:?}");
    assert!(
        breaches.is_empty(),
        "imports from a layer above their own (see the layers in src/lib.rs):\n{}",
        breaches
            .iter()
            .map(|b| format!("  {}:{}: {} uses {}", b.file, b.line, b.from, b.to))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checker finds an upward import in each form the crate writes one.
#[test]
fn the_check_sees_each_form_of_import() {
    let shared = ["shared".to_owned(), "wire".to_owned()];
    let text = "use crate::{\n    node::functions::Table,\n    shared::lock::lock,\n};\n\
                fn f() { crate::registry::events_exchange(\"s\"); }\n\
                // crate::cli::run in a comment is no import\n";
    let found: Vec<_> = breaches_in("wire.rs", &shared, text)
        .into_iter()
        .map(|b| (b.line, b.to))
        .collect();
    assert_eq!(found, [(2, "node"), (5, "registry")]);

    let center = ["center".to_owned()];
    let climbs = "use super::node::ComputeNode;\nuse super::shared::wire;\n";
    let found: Vec<_> = breaches_in("center/mod.rs", &center, climbs)
        .into_iter()
        .map(|b| (b.line, b.to))
        .collect();
    assert_eq!(found, [(1, "node")]);
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module a file under `src/` defines, as its path of names; `None`
/// for the crate's root and the binaries, which sit above every layer.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut names: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if names.len() == 1 || names[0] == "bin" {
        return None;
    }
    let last = names.pop().unwrap();
    if last != "mod.rs" {
        names.push(last.trim_end_matches(".rs").to_owned());
    }
    Some(names)
}

fn layer_of(name: &str) -> Option<(&'static str, u8)> {
    LAYERS.iter().copied().find(|(layer, _)| *layer == name)
}

/// The imports in `text` (the file `file`, module `module`) that break
/// the layering.
fn breaches_in(file: &str, module: &[String], text: &str) -> Vec<Breach> {
    let (from, rank) = layer_of(&module[0]).expect("a file outside every layer");
    let code = without_comments(text);
    let mut breaches = Vec::new();
    for (offset, name) in root_names(module, &code) {
        let Some((to, to_rank)) = layer_of(name) else {
            continue;
        };
        if to != from && to_rank >= rank {
            let line = code[..offset].matches('\n').count() + 1;
            breaches.push(Breach {
                file: file.to_owned(),
                line,
                from,
                to,
            });
        }
    }
    breaches
}

/// `text` with each `//` comment blanked out, lines kept where they were.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(start) => &line[..start],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each name the code reaches at the crate's root, with its offset: after
/// `crate::`, inside a `crate::{…}` tree's top level, and after a chain
/// of `super::` long enough to climb out of `module`.
fn root_names<'a>(module: &[String], code: &'a str) -> Vec<(usize, &'a str)> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let after = at + "crate::".len();
        if code[after..].starts_with('{') {
            names.extend(tree_heads(code, after));
        } else {
            names.push((after, identifier(&code[after..])));
        }
    }
    for (at, _) in code.match_indices("super::") {
        let before = &code[..at];
        if before.ends_with("super::") {
            continue;
        }
        let mut climbs = 0;
        let mut rest = &code[at..];
        while let Some(tail) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = tail;
        }
        if climbs >= module.len() {
            let after = code.len() - rest.len();
            names.push((after, identifier(rest)));
        }
    }
    names
}

/// The first name of each path at the top level of the `{…}` tree that
/// starts at `open`.
fn tree_heads(code: &str, open: usize) -> Vec<(usize, &str)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, c) in code[open..].char_indices() {
        let at = open + i;
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    item_start = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if c.is_whitespace() => {}
            _ if depth == 1 && item_start => {
                heads.push((at, identifier(&code[at..])));
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier(code: &str) -> &str {
    let end = code
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(code.len());
    &code[..end]
}
