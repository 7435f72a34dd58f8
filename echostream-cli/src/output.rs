//! Printing: aligned tables for people, JSON for machines, colour only on a terminal.

use crate::args::ColorChoice;
use std::io::IsTerminal;
use std::sync::OnceLock;

static COLOR: OnceLock<bool> = OnceLock::new();

/// Decides once whether stdout gets colour.
pub(crate) fn init_color(choice: ColorChoice) {
    let on = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
        }
    };
    let _ = COLOR.set(on);
}

fn paint(code: &str, text: &str) -> String {
    if *COLOR.get().unwrap_or(&false) {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

pub(crate) fn bold(text: &str) -> String {
    paint("1", text)
}

pub(crate) fn green(text: &str) -> String {
    paint("32", text)
}

pub(crate) fn red(text: &str) -> String {
    paint("31", text)
}

pub(crate) fn dim(text: &str) -> String {
    paint("2", text)
}

/// Colour on stderr follows its own terminal test.
pub(crate) fn stderr_red(text: &str) -> String {
    if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) {
        format!("\x1b[31m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Prints rows as columns aligned under a bold header; cells are plain text.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>, style: fn(&str) -> String| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            out.push_str(&style(&cell));
            if i != last {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{out}");
    };
    line(header.iter().map(|h| (*h).to_owned()).collect(), bold);
    for row in rows {
        line(row.clone(), |s| s.to_owned());
    }
}

/// Prints a JSON value on one line.
pub(crate) fn json_line(value: &serde_json::Value) {
    println!("{value}");
}

/// Prints a JSON value indented.
pub(crate) fn json_pretty(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// `1.234 ms` style durations.
pub(crate) fn millis(d: std::time::Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
