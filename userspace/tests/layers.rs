//! The library's layers import only downward: each layer may use the ones
//! listed before it here, never one after it, so the dependency graph has
//! no cycle. Read from the sources, so a new upward import fails the test.

use std::{fs, path::Path};

/// Bottom to top. `datapath` and `model` know nothing of each other.
const LAYERS: [&str; 8] = [
    "datapath", "model", "render", "apply", "store", "engine", "agent", "cli",
];

/// Every layer a source file names through `crate::`.
fn layers_used(text: &str) -> Vec<&'static str> {
    let mut used = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(block) = rest.strip_prefix('{') {
            // `use crate::{a::b, c, d::{e, f}};`: the names at depth one.
            let mut depth = 1;
            let mut start = true;
            let mut name = String::new();
            for c in block.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    c if depth == 1 && start && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ => {
                        if !name.is_empty() {
                            used.push(std::mem::take(&mut name));
                        }
                        if !c.is_whitespace() {
                            start = false;
                        }
                    }
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            used.push(name);
        }
    }
    LAYERS
        .into_iter()
        .filter(|l| used.iter().any(|u| u == l))
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        sources(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "layer {layer} has no sources");
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for used in layers_used(&text) {
                let used_rank = LAYERS.iter().position(|l| *l == used).unwrap();
                let sideways = matches!((*layer, used), ("model", "datapath"));
                if used_rank > rank || sideways {
                    wrong.push(format!("{} uses {used}", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn the_scanner_sees_nested_use_lists() {
    let text = "use crate::{\n    apply::{self, Kernel},\n    model::Model,\n};\n\
                fn f() { crate::cli::x(); }";
    assert_eq!(layers_used(text), ["model", "apply", "cli"]);
}
