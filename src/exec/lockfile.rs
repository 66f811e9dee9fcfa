//! Lock files: takes the steps of a finished run and returns `NAME.lock`, the small text file
//! beside `NAME.opt` that records what each step computed; and compares two of them.
//!
//! The file is TOML, one table per step in name order, with the step's kind, content hash,
//! the hashes of the files it wrote and its metrics. Every value is deterministic, so two runs
//! of a recipe write the same bytes and the file can be committed with the recipe: `git diff`
//! then shows what a change to the recipe did to the results, and `recipe metrics diff` shows
//! it per metric. Latency is measured, not computed, and differs from run to run, so it is left
//! out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StepRecord;

/// The contents of a lock file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    pub recipe: String,
    pub program: String,
    #[serde(default)]
    pub steps: BTreeMap<String, LockedStep>,
}

/// What one step computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedStep {
    pub kind: String,
    pub hash: String,
    /// Files written, relative to the recipe's folder, with their blake3 hashes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub writes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

const HEADER: &str = "# Written by `recipe run`: what each step of the recipe computed.\n\
                      # Commit it with the recipe; `recipe metrics diff` compares revisions.\n";

impl LockFile {
    /// The lock of a run's steps.
    pub fn from_steps(recipe: &str, steps: &[StepRecord]) -> LockFile {
        let steps = steps
            .iter()
            .map(|s| {
                let writes = s
                    .manifest
                    .outputs
                    .iter()
                    .map(|o| (o.path.display().to_string(), o.hash.clone()))
                    .collect();
                let metrics = s
                    .manifest
                    .metrics
                    .iter()
                    .filter(|(k, _)| !is_measured(k))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                let step =
                    LockedStep { kind: s.kind.to_string(), hash: s.hash.clone(), writes, metrics };
                (s.name.clone(), step)
            })
            .collect();
        LockFile {
            recipe: recipe.to_string(),
            program: crate::graph::PROGRAM_VERSION.to_string(),
            steps,
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let body = toml::to_string(self).expect("lock files serialise");
        format!("{HEADER}\n{body}")
    }

    pub fn parse(text: &str) -> Result<LockFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Read a lock file; a missing one is empty.
    pub fn read(path: &Path) -> Result<LockFile, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => LockFile::parse(&text).map_err(|e| format!("`{}`: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default()),
            Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
        }
    }
}

/// Metrics that are measured rather than computed, and so differ between runs.
fn is_measured(key: &str) -> bool {
    key == "latency" || key.ends_with(".latency")
}

/// What changed from `old` to `new`, as a table: one line per metric that changed, per step
/// added or removed, and per step whose hash changed with equal metrics. `labels` name the
/// two sides in the header.
pub fn diff(old: &LockFile, new: &LockFile, labels: (&str, &str)) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut unchanged = 0;
    let names: std::collections::BTreeSet<&String> =
        old.steps.keys().chain(new.steps.keys()).collect();
    for name in names {
        match (old.steps.get(name), new.steps.get(name)) {
            (None, Some(_)) => rows.push(row(name, "(new step)", None, None)),
            (Some(_), None) => rows.push(row(name, "(removed)", None, None)),
            (Some(a), Some(b)) => {
                let keys: std::collections::BTreeSet<&String> =
                    a.metrics.keys().chain(b.metrics.keys()).collect();
                let mut changed = false;
                for key in keys {
                    let (x, y) = (a.metrics.get(key).copied(), b.metrics.get(key).copied());
                    if !same(x, y) {
                        rows.push(row(name, key, x, y));
                        changed = true;
                    }
                }
                if !changed && a.hash != b.hash {
                    rows.push(row(name, "(changed, same metrics)", None, None));
                } else if !changed {
                    unchanged += 1;
                }
            }
            (None, None) => unreachable!("the name comes from one of the two"),
        }
    }

    let mut out = String::new();
    if rows.is_empty() {
        let _ = writeln!(out, "no metric changed ({unchanged} steps)");
        return out;
    }
    let header = [
        "step".to_string(),
        "metric".to_string(),
        labels.0.to_string(),
        labels.1.to_string(),
        "change".to_string(),
    ];
    rows.insert(0, header);
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for r in &rows {
        let line = format!(
            "  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(out, "  {unchanged} steps unchanged");
    out
}

fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x == y || (x.is_nan() && y.is_nan()),
        (None, None) => true,
        _ => false,
    }
}

fn row(step: &str, metric: &str, old: Option<f64>, new: Option<f64>) -> [String; 5] {
    let show = |v: Option<f64>| v.map(number).unwrap_or_default();
    let change = match (old, new) {
        (Some(a), Some(b)) => {
            let d = b - a;
            if d >= 0.0 {
                format!("+{}", number(d))
            } else {
                number(d)
            }
        }
        _ => String::new(),
    };
    [step.to_string(), metric.to_string(), show(old), show(new), change]
}

/// A metric for people: integers as integers, other values to six significant digits.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    if !v.is_finite() {
        return v.to_string();
    }
    let digits = (5 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let text = format!("{v:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The lock file `path` as committed at git revision `rev`; empty when that revision does not
/// have it.
pub fn at_revision(path: &Path, rev: &str) -> Result<LockFile, String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or("the lock file has no name")?;
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["show", &format!("{rev}:./{name}")])
        .output()
        .map_err(|e| format!("cannot run `git`: {e}"))?;
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        return LockFile::parse(&text).map_err(|e| format!("`{name}` at {rev}: {e}"));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A revision that exists but lacks the file: everything is new.
    let exists = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if exists && (stderr.contains("does not exist") || stderr.contains("exists on disk")) {
        return Ok(LockFile::default());
    }
    Err(format!("git cannot show `{name}` at `{rev}`: {}", stderr.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(acc: f64, hash: &str) -> LockFile {
        let step = LockedStep {
            kind: "eval".into(),
            hash: hash.into(),
            writes: BTreeMap::from([("out/report.json".to_string(), "ab".to_string())]),
            metrics: BTreeMap::from([
                ("base.accuracy".to_string(), acc),
                ("base.size".to_string(), 38740.0),
            ]),
        };
        LockFile {
            recipe: "digits".into(),
            program: "recipe 0".into(),
            steps: BTreeMap::from([("report".to_string(), step)]),
        }
    }

    #[test]
    fn lock_files_round_trip_through_text() {
        let l = lock(0.974, "h1");
        assert_eq!(LockFile::parse(&l.render()).unwrap(), l);
        insta::assert_snapshot!(l.render(), @r#"
        # Written by `recipe run`: what each step of the recipe computed.
        # Commit it with the recipe; `recipe metrics diff` compares revisions.

        recipe = "digits"
        program = "recipe 0"

        [steps.report]
        kind = "eval"
        hash = "h1"

        [steps.report.writes]
        "out/report.json" = "ab"

        [steps.report.metrics]
        "base.accuracy" = 0.974
        "base.size" = 38740.0
        "#);
    }

    #[test]
    fn diffs_name_what_changed() {
        let text = diff(&lock(0.974, "h1"), &lock(0.9777, "h2"), ("HEAD", "now"));
        insta::assert_snapshot!(text, @r"
          step    metric          HEAD     now   change
          report  base.accuracy  0.974  0.9777  +0.0037
          0 steps unchanged
        ");
        assert_eq!(
            diff(&lock(0.9, "h"), &lock(0.9, "h"), ("a", "b")),
            "no metric changed (1 steps)\n"
        );
    }
}
