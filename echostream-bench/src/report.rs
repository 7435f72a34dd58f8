//! Collected figures, the goals of issue 8, the table and the JSON file.

use crate::systems::System;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Figure {
    /// Case number of issue 8 ("1".."9") or "alloc".
    pub(crate) case: String,
    /// What was measured, with its conditions.
    pub(crate) metric: String,
    /// Runtime layout.
    pub(crate) layout: String,
    /// System name.
    pub(crate) system: String,
    /// The figure; `None` when it could not be measured (see `note`).
    pub(crate) value: Option<f64>,
    /// Unit of `value`.
    pub(crate) unit: String,
    /// Extra facts (counts, why a figure is missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

/// One goal of the issue, evaluated on this run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Goal {
    /// Case number.
    pub(crate) case: String,
    /// The goal as the issue states it.
    pub(crate) goal: String,
    /// Layout of the figures compared.
    pub(crate) layout: String,
    /// EchoStream's figure / the baseline's (or the figure itself for absolute goals).
    pub(crate) ratio: Option<f64>,
    /// The bound, e.g. "<= 1.00".
    pub(crate) bound: String,
    /// Whether it holds; `None` when a figure is missing.
    pub(crate) met: Option<bool>,
}

/// Everything a run produced.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// How and where it ran.
    pub(crate) meta: BTreeMap<String, serde_json::Value>,
    /// Every figure, in the order measured.
    pub(crate) figures: Vec<Figure>,
    /// Goals, evaluated after the run.
    pub(crate) goals: Vec<Goal>,
    /// Wrong answers (echo differing from the request, events missing or
    /// out of order, byte counts off), per "case/system"; all zero in a good run.
    pub(crate) wrong_answers: BTreeMap<String, u64>,
    /// Cases or systems that failed outright, with the error.
    pub(crate) failures: Vec<String>,
}

impl Report {
    /// Adds a figure.
    pub(crate) fn add(
        &mut self,
        case: &str,
        metric: &str,
        layout: &str,
        system: System,
        value: Option<f64>,
        unit: &str,
    ) {
        self.add_noted(case, metric, layout, system, value, unit, None);
    }

    /// Adds a figure with a note.
    #[allow(clippy::too_many_arguments)] // a flat record; a builder would only hide the fields
    pub(crate) fn add_noted(
        &mut self,
        case: &str,
        metric: &str,
        layout: &str,
        system: System,
        value: Option<f64>,
        unit: &str,
        note: Option<String>,
    ) {
        self.figures.push(Figure {
            case: case.into(),
            metric: metric.into(),
            layout: layout.into(),
            system: system.name().into(),
            value,
            unit: unit.into(),
            note,
        });
    }

    /// Counts wrong answers of a system in a case (adds a zero entry too,
    /// so the JSON shows that the check ran).
    pub(crate) fn wrong(&mut self, case: &str, system: System, n: u64) {
        *self
            .wrong_answers
            .entry(format!("{case}/{}", system.name()))
            .or_default() += n;
    }

    /// Records a failure and says so on stderr at once.
    pub(crate) fn fail(&mut self, what: String) {
        eprintln!("  FAILED: {what}");
        self.failures.push(what);
    }

    /// The figure of `system` for a case, metric and layout.
    pub(crate) fn get(&self, case: &str, metric: &str, layout: &str, system: System) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.case == case && f.metric == metric && f.layout == layout && f.system == system.name())
            .and_then(|f| f.value)
    }

    /// Adds a goal comparing EchoStream with `baseline` (`factor` × the
    /// baseline's figure is the bound; `at_most` for latencies and costs).
    #[allow(clippy::too_many_arguments)] // a flat record; a builder would only hide the fields
    pub(crate) fn goal_ratio(
        &mut self,
        case: &str,
        goal: &str,
        metric: &str,
        layout: &str,
        baseline: System,
        factor: f64,
        at_most: bool,
    ) {
        let es = self.get(case, metric, layout, System::EchoStream);
        let base = self.get(case, metric, layout, baseline);
        let ratio = match (es, base) {
            (Some(e), Some(b)) if b > 0.0 => Some(e / b),
            _ => None,
        };
        self.push_goal(case, goal, layout, ratio, factor, at_most);
    }

    /// Adds a goal on a value of its own (not a ratio).
    pub(crate) fn push_goal(
        &mut self,
        case: &str,
        goal: &str,
        layout: &str,
        ratio: Option<f64>,
        bound: f64,
        at_most: bool,
    ) {
        let met = ratio.map(|r| if at_most { r <= bound } else { r >= bound });
        self.goals.push(Goal {
            case: case.into(),
            goal: goal.into(),
            layout: layout.into(),
            ratio,
            bound: format!("{} {bound:.2}", if at_most { "≤" } else { "≥" }),
            met,
        });
    }

    /// The table printed to stdout: figures per system with EchoStream's
    /// ratio to each baseline, then the goals.
    pub(crate) fn table(&self) -> String {
        let mut rows: Vec<(String, String, String, String)> = Vec::new();
        for f in &self.figures {
            let key = (f.case.clone(), f.metric.clone(), f.layout.clone(), f.unit.clone());
            if !rows.contains(&key) {
                rows.push(key);
            }
        }
        let mut out = String::new();
        let systems = System::ALL;
        let _ = write!(out, "| case | metric | layout |");
        for s in systems {
            let _ = write!(out, " {} |", s.name());
        }
        for s in &systems[1..] {
            let _ = write!(out, " ES / {} |", s.name());
        }
        out.push('\n');
        out.push_str("|---|---|---|");
        for _ in 0..systems.len() * 2 - 1 {
            out.push_str("---:|");
        }
        out.push('\n');
        // Case order, keeping the order measured within a case.
        let order = |c: &str| {
            crate::config::CASES
                .iter()
                .position(|x| *x == c)
                .unwrap_or(usize::MAX)
        };
        rows.sort_by_key(|r| order(&r.0));
        for (case, metric, layout, unit) in rows {
            let _ = write!(out, "| {case} | {metric} ({unit}) | {layout} |");
            let value = |s: System| {
                self.figures.iter().find(|f| {
                    f.case == case && f.metric == metric && f.layout == layout && f.system == s.name()
                })
            };
            for s in systems {
                let cell = match value(s) {
                    None => "".to_string(),
                    Some(f) => match f.value {
                        Some(v) => num(v),
                        None => "n/a".to_string(),
                    },
                };
                let _ = write!(out, " {cell} |");
            }
            let es = value(System::EchoStream).and_then(|f| f.value);
            for s in &systems[1..] {
                let cell = match (es, value(*s).and_then(|f| f.value)) {
                    (Some(e), Some(b)) if b > 0.0 => format!("{:.2}", e / b),
                    _ => "".to_string(),
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out.push_str("\n| case | goal (EchoStream / baseline) | layout | ratio | bound | met |\n");
        out.push_str("|---|---|---|---:|---|---|\n");
        for g in &self.goals {
            let ratio = g.ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "n/a".into());
            let met = match g.met {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "n/a",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {ratio} | {} | {met} |",
                g.case, g.goal, g.layout, g.bound
            );
        }
        let notes: Vec<&Figure> = self.figures.iter().filter(|f| f.note.is_some()).collect();
        if !notes.is_empty() {
            out.push_str("\nNotes:\n");
            for f in notes {
                let _ = writeln!(
                    out,
                    "- case {} {} ({}, {}): {}",
                    f.case,
                    f.metric,
                    f.system,
                    f.layout,
                    f.note.as_deref().unwrap_or_default()
                );
            }
        }
        let wrong: u64 = self.wrong_answers.values().sum();
        let _ = writeln!(
            out,
            "\nWrong answers: {wrong} (checked in {} case/system pairs). Failures: {}.",
            self.wrong_answers.len(),
            self.failures.len()
        );
        for f in &self.failures {
            let _ = writeln!(out, "- {f}");
        }
        out
    }
}

/// A figure with as many decimals as its size deserves.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
