//! The trial table of a search: takes the finished trials and returns the table as aligned
//! text, CSV and JSON, and an SVG plot of the objective against each varied setting.
//!
//! Every form lists the trials best first (ties by trial index, the lower first). The files
//! hold no wall times, so that two runs of a recipe write them byte for byte alike whatever
//! the machine's load; the text printed after a run shows them.

use std::fmt::Write as _;

use serde_json::json;

use super::space::{show, Values};
use crate::check::spec::{Dimension, Distribution, Objective, Scalar};

/// One finished trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// The trial's number, counting from 0 in the order the strategy made them.
    pub index: usize,
    pub values: Values,
    /// The objective on the validation split after the trial's last rung.
    pub objective: f64,
    /// The epochs of the trial's last training run.
    pub epochs: usize,
    /// The epochs of all its training runs (one per rung of successive halving).
    pub epochs_total: usize,
    /// The last rung the trial reached, counting from 0.
    pub rung: usize,
    pub seconds: f64,
    /// Whether its last run came from the trial store rather than being trained.
    pub stored: bool,
}

/// The trials best first: by objective, then by index.
pub fn ranked<'t>(trials: &'t [Trial], objective: &Objective) -> Vec<&'t Trial> {
    let mut order: Vec<&Trial> = trials.iter().collect();
    order.sort_by(|a, b| {
        // A later rung trained longer; its objective outranks an earlier rung's.
        let by_rung = b.rung.cmp(&a.rung);
        let by_value = if objective.maximize {
            b.objective.total_cmp(&a.objective)
        } else {
            a.objective.total_cmp(&b.objective)
        };
        by_rung.then(by_value).then(a.index.cmp(&b.index))
    });
    order
}

/// The name of the objective's column, such as `val_accuracy`.
pub fn objective_name(objective: &Objective) -> String {
    format!("val_{}", objective.metric.name())
}

/// The table as aligned text, with wall times.
pub fn text(trials: &[Trial], dims: &[Dimension], objective: &Objective) -> String {
    let mut header = vec!["trial".to_string()];
    header.extend(dims.iter().map(|d| d.path.clone()));
    header.extend([objective_name(objective), "epochs".into(), "rung".into(), "time".into()]);
    let mut lines = vec![header];
    for t in ranked(trials, objective) {
        let mut line = vec![t.index.to_string()];
        line.extend(t.values.iter().map(short));
        line.push(format!("{:.4}", t.objective));
        line.push(t.epochs_total.to_string());
        line.push(t.rung.to_string());
        line.push(if t.stored { "stored".into() } else { format!("{:.2}s", t.seconds) });
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> =
            line.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect();
        let _ = writeln!(out, "  {}", cells.join("  "));
    }
    out
}

/// A value for the text table: floats with four significant digits.
fn short(value: &Scalar) -> String {
    match value {
        Scalar::Float(x) => format!("{x:.4e}"),
        other => show(other),
    }
}

/// A value exactly, for files: floats in the shortest form that reads back the same.
fn exact(value: &Scalar) -> serde_json::Value {
    match value {
        Scalar::Int(n) => json!(n),
        Scalar::Float(x) => json!(x),
        Scalar::Bool(b) => json!(b),
        Scalar::Word(w) => json!(w),
    }
}

/// The table as CSV: a header row, then one row per trial, best first.
pub fn csv(trials: &[Trial], dims: &[Dimension], objective: &Objective) -> String {
    let mut out = String::from("trial");
    for d in dims {
        let _ = write!(out, ",{}", d.path);
    }
    let _ = writeln!(out, ",{},epochs,rung", objective_name(objective));
    for t in ranked(trials, objective) {
        let _ = write!(out, "{}", t.index);
        for v in &t.values {
            let _ = write!(out, ",{}", exact(v).to_string().trim_matches('"'));
        }
        let _ = writeln!(out, ",{},{},{}", t.objective, t.epochs_total, t.rung);
    }
    out
}

/// The table as JSON: `{"objective": ..., "best": i, "trials": [...]}`, trials best first.
pub fn to_json(trials: &[Trial], dims: &[Dimension], objective: &Objective) -> String {
    let order = ranked(trials, objective);
    let rows: Vec<serde_json::Value> = order
        .iter()
        .map(|t| {
            let values: serde_json::Map<String, serde_json::Value> =
                dims.iter().zip(&t.values).map(|(d, v)| (d.path.clone(), exact(v))).collect();
            json!({
                "trial": t.index,
                "values": values,
                "objective": t.objective,
                "epochs": t.epochs_total,
                "rung": t.rung,
            })
        })
        .collect();
    let doc = json!({
        "objective": objective_name(objective),
        "maximize": objective.maximize,
        "best": order.first().map(|t| t.index),
        "trials": rows,
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("the table serialises");
    text.push('\n');
    text
}

/// Panel size and margins of the plot, in pixels.
const W: f64 = 320.0;
const H: f64 = 240.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 28.0;
const RIGHT: f64 = 16.0;

/// An SVG plot with one panel per varied setting: the objective of every trial against the
/// setting's value (on a log axis for `loguniform`, evenly spaced for words), the best trial
/// marked in red.
pub fn svg(trials: &[Trial], dims: &[Dimension], objective: &Objective) -> String {
    let best = ranked(trials, objective).first().map(|t| t.index);
    let ys: Vec<f64> = trials.iter().map(|t| t.objective).filter(|y| y.is_finite()).collect();
    let (data_lo, data_hi) = bounds(&ys);
    let (y_lo, y_hi) = padded((data_lo, data_hi));
    let width = W * dims.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{H}\" \
         viewBox=\"0 0 {width} {H}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(out, "<rect width=\"{width}\" height=\"{H}\" fill=\"white\"/>");
    for (p, dim) in dims.iter().enumerate() {
        let x0 = W * p as f64;
        let (px_lo, px_hi) = (x0 + LEFT, x0 + W - RIGHT);
        let (py_lo, py_hi) = (H - BOTTOM, TOP);
        let y_of = |y: f64| py_lo + (y - y_lo) / (y_hi - y_lo) * (py_hi - py_lo);
        let scale = Scale::of(&dim.dist, trials.iter().map(|t| &t.values[p]));

        // Frame, title and axis labels.
        let _ = writeln!(
            out,
            "<rect x=\"{px_lo}\" y=\"{py_hi}\" width=\"{}\" height=\"{}\" fill=\"none\" \
             stroke=\"#888\"/>",
            px_hi - px_lo,
            py_lo - py_hi
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}{}</text>",
            (px_lo + px_hi) / 2.0,
            H - 8.0,
            escape(&dim.path),
            if scale.log { " (log)" } else { "" }
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            (px_lo + px_hi) / 2.0,
            TOP - 10.0,
            escape(&objective_name(objective))
        );
        for y in [data_lo, data_hi] {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                px_lo - 4.0,
                y_of(y) + 4.0,
                tick(y)
            );
        }
        for (label, at) in scale.ticks() {
            let x = px_lo + at * (px_hi - px_lo);
            let _ = writeln!(
                out,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                py_lo + 14.0,
                escape(&label)
            );
        }

        // The trials, the best last so that it is drawn on top.
        let mut order: Vec<&Trial> = trials.iter().filter(|t| t.objective.is_finite()).collect();
        order.sort_by_key(|t| Some(t.index) == best);
        for t in order {
            let x = px_lo + scale.position(&t.values[p]) * (px_hi - px_lo);
            let y = y_of(t.objective);
            let (r, fill) = if Some(t.index) == best { (5.5, "#d62728") } else { (3.5, "#1f77b4") };
            let _ = writeln!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"{fill}\" \
                 fill-opacity=\"0.8\"><title>trial {}: {} = {}, {} = {}</title></circle>",
                t.index,
                escape(&dim.path),
                escape(&show(&t.values[p])),
                escape(&objective_name(objective)),
                t.objective
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Where values of one dimension go along its axis, from 0 to 1.
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    /// The words of a dimension of words, evenly spaced in this order.
    words: Vec<String>,
}

impl Scale {
    fn of<'a>(dist: &Distribution, values: impl Iterator<Item = &'a Scalar>) -> Scale {
        let log = matches!(dist, Distribution::LogUniform { .. });
        let values: Vec<&Scalar> = values.collect();
        let numbers: Vec<f64> = values.iter().filter_map(|v| number(v)).collect();
        if numbers.len() < values.len() {
            let mut words: Vec<String> = match dist {
                Distribution::Choice(choices) => choices.iter().map(show).collect(),
                _ => Vec::new(),
            };
            words.dedup();
            return Scale { lo: 0.0, hi: 1.0, log: false, words };
        }
        let (lo, hi) = match dist {
            Distribution::Uniform { low, high, .. }
            | Distribution::LogUniform { low, high, .. } => (*low, *high),
            Distribution::Range { low, high } => (*low as f64, *high as f64),
            Distribution::Choice(_) => bounds(&numbers),
        };
        let (lo, hi) = if log { (lo.ln(), hi.ln()) } else { (lo, hi) };
        Scale { lo, hi, log, words: Vec::new() }
    }

    fn position(&self, value: &Scalar) -> f64 {
        if !self.words.is_empty() {
            let at = self.words.iter().position(|w| *w == show(value)).unwrap_or(0);
            return (at as f64 + 0.5) / self.words.len() as f64;
        }
        let x = number(value).unwrap_or(self.lo);
        let x = if self.log { x.ln() } else { x };
        if self.hi > self.lo {
            0.04 + 0.92 * (x - self.lo) / (self.hi - self.lo)
        } else {
            0.5
        }
    }

    fn ticks(&self) -> Vec<(String, f64)> {
        if !self.words.is_empty() {
            let n = self.words.len() as f64;
            return self
                .words
                .iter()
                .enumerate()
                .map(|(i, w)| (w.clone(), (i as f64 + 0.5) / n))
                .collect();
        }
        let unmap = |x: f64| if self.log { x.exp() } else { x };
        vec![(tick(unmap(self.lo)), 0.04), (tick(unmap(self.hi)), 0.96)]
    }
}

fn number(value: &Scalar) -> Option<f64> {
    match value {
        Scalar::Int(n) => Some(*n as f64),
        Scalar::Float(x) => Some(*x),
        _ => None,
    }
}

fn bounds(xs: &[f64]) -> (f64, f64) {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Bounds widened a little, and never empty, so that points do not sit on the frame.
fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let pad = if hi > lo { (hi - lo) * 0.08 } else { lo.abs().max(1.0) * 0.05 };
    (lo - pad, hi + pad)
}

fn tick(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e6 {
        return format!("{x:.0}");
    }
    if x != 0.0 && (x.abs() < 1e-2 || x.abs() >= 1e4) {
        format!("{x:.1e}")
    } else {
        format!("{x:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
