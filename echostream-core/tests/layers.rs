//! Lower layers never name upper ones.
//!
//! The layers of `echostream-core`, bottom to top:
//!
//! ```text
//! echostream-types → connection → protocol → stream → rpc → (facade: the `echostream` crate)
//! ```
//!
//! A file may name its own layer and the layers below it, never one above: `protocol` reaches
//! `rpc` only through the `protocol::Inbound` trait that `rpc` implements (`stream` reaches the
//! RPC policy the same way), and hands the streams the peer opens to the stream layer through
//! `protocol::StreamHost`, which `stream::ConnStreams` implements. `error.rs` (the crate-wide `Error`) sits with `connection`, and
//! may name the stream layer only for its `From<StreamError>` variant; `metrics.rs` (metric
//! names and handles) sits there too and names no layer.
//!
//! This test reads every `.rs` file under `src/{connection,protocol,stream}`, `src/error.rs` and
//! `src/metrics.rs`,
//! takes the `crate::` paths of its code (its `use` lines, grouped `use crate::{..}` imports
//! included, and inline paths; comments are skipped), and fails naming the file and line of
//! each path that names a layer above the file's own. `KNOWN` lists the exceptions still to
//! remove; an entry that no longer matches anything fails too, so the list only shrinks.

use std::path::{Path, PathBuf};

/// The layers a `crate::` path can name, bottom to top (`testing` holds test helpers that use
/// everything).
const LAYERS: &[&str] = &["connection", "protocol", "stream", "rpc", "testing"];

/// Exceptions still to remove: (file under `src/`, layer it names), each with its reason.
const KNOWN: &[(&str, &str)] = &[];

/// The layer a file sits in; `None` for files this check does not cover.
fn layer_of(rel: &str) -> Option<&'static str> {
    // The crate-wide error and the metric handles sit at the bottom: every layer uses them.
    if rel == "error.rs" || rel == "metrics.rs" {
        return Some("connection");
    }
    let top = rel.split('/').next()?;
    LAYERS.iter().copied().find(|l| *l == top && rel.contains('/'))
}

fn rank(layer: &str) -> usize {
    LAYERS.iter().position(|l| *l == layer).unwrap_or(usize::MAX)
}

/// The layers named by the `crate::` paths in `code` (one statement, comments removed).
fn named_layers(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `echostream_crate::x` or `my_crate::x` are not ours.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0usize;
            let mut item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => word.push(c),
                    _ if item_start && !word.is_empty() => {
                        out.push(std::mem::take(&mut word));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !word.is_empty() {
                out.push(word);
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(word);
        }
    }
    out.retain(|w| LAYERS.contains(&w.as_str()));
    out
}

/// The code of a file as (line number, text) statements: comments removed, and a grouped
/// `use crate::{` joined with its following lines up to its closing brace.
fn statements(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut open: Option<(usize, String, i32)> = None;
    for (i, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        if let Some((start, mut joined, depth)) = open.take() {
            joined.push(' ');
            joined.push_str(code);
            let depth = depth + brace_balance(code);
            if depth > 0 {
                open = Some((start, joined, depth));
            } else {
                out.push((start, joined));
            }
            continue;
        }
        let depth = brace_balance(code);
        if code.contains("crate::{") && depth > 0 {
            open = Some((i + 1, code.to_owned(), depth));
        } else {
            out.push((i + 1, code.to_owned()));
        }
    }
    out
}

fn brace_balance(code: &str) -> i32 {
    code.chars()
        .map(|c| match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        })
        .sum()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn lower_layers_never_name_upper_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut offences = Vec::new();
    let mut used_exceptions = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let Some(layer) = layer_of(&rel) else { continue };
        let text = std::fs::read_to_string(path).expect("readable source");
        for (line, code) in statements(&text) {
            for named in named_layers(&code) {
                let allowed = rank(&named) <= rank(layer) || (rel == "error.rs" && named == "stream");
                if allowed {
                    continue;
                }
                if KNOWN.contains(&(rel.as_str(), named.as_str())) {
                    used_exceptions.push((rel.clone(), named));
                    continue;
                }
                offences.push(format!(
                    "src/{rel}:{line}: the {layer} layer names `crate::{named}`, a layer above it: {}",
                    code.trim()
                ));
            }
        }
    }
    for (file, named) in KNOWN {
        if !used_exceptions.iter().any(|(f, n)| f == file && n == named) {
            offences.push(format!(
                "src/{file} no longer names `crate::{named}`: remove it from KNOWN in tests/layers.rs"
            ));
        }
    }
    assert!(offences.is_empty(), "layer violations:\n{}", offences.join("\n"));
}

#[test]
fn the_scanner_finds_inline_grouped_and_multiline_paths() {
    assert_eq!(named_layers("use crate::rpc::Context;"), ["rpc"]);
    assert_eq!(
        named_layers("let x = crate::stream::f(crate::Error::X);"),
        ["stream"]
    );
    assert_eq!(
        named_layers("use crate::{protocol::Peer, rpc::{a, b}, Error};"),
        ["protocol", "rpc"]
    );
    assert!(named_layers("use echostream_crate::rpc::X;").is_empty());
    let text = "use crate::{\n    stream::X,\n    rpc::Y,\n};\n// crate::rpc in a comment\nfn f() {}";
    let found: Vec<_> = statements(text)
        .into_iter()
        .flat_map(|(line, code)| named_layers(&code).into_iter().map(move |l| (line, l)))
        .collect();
    assert_eq!(found, [(1, "stream".to_owned()), (1, "rpc".to_owned())]);
}
