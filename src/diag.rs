//! Diagnostics: the library's error type and how it is rendered.
//!
//! Every stage reports typed errors with spans. [`enum@Error`] gathers them with
//! the recipe text they point into, so each renders the way rustc shows its
//! errors: the message, the code, the source lines with a label under the
//! offending span, and a help line.

use std::fmt::Write as _;
use std::path::PathBuf;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, Report};
use thiserror::Error;

use crate::exec::RunError;
use crate::Recipe;

type Problem = Box<dyn Diagnostic + Send + Sync + 'static>;

/// Everything that can stop a recipe.
#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Files `recipe fmt` could not format, or, with `--check`, files not in
    /// the canonical layout.
    #[error("{}", not_formatted(unformatted, failed))]
    NotFormatted { unformatted: Vec<PathBuf>, failed: Vec<PathBuf> },

    /// Syntax or check problems, all of them.
    #[error("{summary}")]
    Problems { summary: String, src: NamedSource<String>, problems: Vec<Problem> },

    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A command that works on files or git rather than on one recipe failed.
    #[error("{message}")]
    Command { message: String, help: Option<String> },

    #[error("cannot plan the recipe: {message}")]
    Plan { message: String },

    /// A weights file that cannot be read.
    #[error(transparent)]
    Format(#[from] crate::formats::safetensors::FormatError),

    #[error("there is no step `{name}`")]
    NoSuchStep { name: String, known: Vec<String> },

    /// A step failed or could not start.
    #[error("{error}")]
    Run { src: NamedSource<String>, error: Box<RunError> },
}

impl Error {
    /// Each problem as a miette report with its source attached.
    pub fn reports(&self) -> Vec<Report> {
        match self {
            Error::Problems { src, problems, .. } => problems
                .iter()
                .map(|p| {
                    let rendered = Rendered::of(p.as_ref()).fit(src.inner());
                    Report::new(rendered).with_source_code(src.clone())
                })
                .collect(),
            Error::Run { src, error } => {
                let rendered = Rendered::of(error.as_ref()).fit(src.inner());
                vec![Report::new(rendered).with_source_code(src.clone())]
            }
            Error::NoSuchStep { name, known } => {
                let help = format!("steps are {}", known.join(", "));
                vec![miette::miette!(code = "recipe::run::no_such_step", help = help, "{self}")
                    .wrap_err(format!("cannot run `{name}`"))]
            }
            Error::Command { message, help: Some(help) } => {
                vec![miette::miette!(help = help.clone(), "{message}")]
            }
            other => vec![miette::miette!("{other}")],
        }
    }

    /// The problems as plain text without colour at the given width, as in
    /// the snapshots of the tests.
    pub fn render(&self, width: usize) -> String {
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(width)
            .with_links(false);
        let mut out = String::new();
        for report in self.reports() {
            let _ = handler.render_report(&mut out, report.as_ref());
            out.push('\n');
        }
        if let Error::Problems { summary, .. } = self {
            let _ = writeln!(out, "{summary}");
        }
        out
    }
}

/// "`a.opt` is not formatted; 2 files could not be formatted".
fn not_formatted(unformatted: &[PathBuf], failed: &[PathBuf]) -> String {
    let say = |paths: &[PathBuf], one: &str, many: &str| match paths {
        [] => None,
        [path] => Some(format!("`{}` {one}", path.display())),
        _ => Some(format!("{} files {many}", paths.len())),
    };
    let parts = [
        say(unformatted, "is not formatted", "are not formatted"),
        say(failed, "could not be formatted", "could not be formatted"),
    ];
    parts.into_iter().flatten().collect::<Vec<_>>().join("; ")
}

/// A snapshot of a diagnostic, so that a borrowed one can become a report.
#[derive(Debug)]
struct Rendered {
    message: String,
    code: Option<String>,
    help: Option<String>,
    labels: Vec<miette::LabeledSpan>,
}

impl Rendered {
    fn of(d: &dyn Diagnostic) -> Self {
        Rendered {
            message: d.to_string(),
            code: d.code().map(|c| c.to_string()),
            help: d.help().map(|h| h.to_string()),
            labels: d.labels().map(|l| l.collect()).unwrap_or_default(),
        }
    }
}

/// Lines longer than this are not quoted under a diagnostic; its position
/// is given in words instead.
const MAX_QUOTED_LINE: usize = 500;

impl Rendered {
    /// Replace labels on lines too long to quote (a generated file, or
    /// thousands of brackets) by their line and column.
    fn fit(mut self, text: &str) -> Self {
        let mut places = Vec::new();
        self.labels.retain(|label| {
            let at = label.offset().min(text.len());
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            if line_end - line_start <= MAX_QUOTED_LINE {
                return true;
            }
            let line = text[..at].matches('\n').count() + 1;
            let column = text[line_start..at].chars().count() + 1;
            places.push(format!("line {line}, column {column}"));
            false
        });
        if !places.is_empty() {
            self.message = format!("{} (at {})", self.message, places.join("; "));
        }
        self
    }
}

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rendered {}

impl Diagnostic for Rendered {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.code.as_ref().map(|c| Box::new(c) as Box<dyn std::fmt::Display>)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
}

fn source(recipe: &Recipe, text: &str) -> NamedSource<String> {
    NamedSource::new(recipe.path.display().to_string(), text.to_string()).with_language("recipe")
}

fn summary(recipe: &Recipe, n: usize) -> String {
    let noun = if n == 1 { "problem" } else { "problems" };
    format!("error: `{}` has {n} {noun}", recipe.path.display())
}

/// Problems in the recipe's own text.
pub(crate) fn problems<E>(recipe: &Recipe, text: Option<&str>, errors: Vec<E>) -> Error
where
    E: Diagnostic + Send + Sync + 'static,
{
    let text = text.unwrap_or(&recipe.text);
    Error::Problems {
        summary: summary(recipe, errors.len()),
        src: source(recipe, text),
        problems: errors.into_iter().map(|e| Box::new(e) as Problem).collect(),
    }
}

/// Problems in the recipe text with `--set` overrides shown after it.
pub(crate) fn problems_in<E>(recipe: &Recipe, text: &str, errors: Vec<E>) -> Error
where
    E: Diagnostic + Send + Sync + 'static,
{
    problems(recipe, Some(text), errors)
}

pub(crate) fn run_error(recipe: &Recipe, overrides: &[String], error: RunError) -> Error {
    let text = crate::overrides::shown_text(&recipe.text, overrides);
    Error::Run { src: source(recipe, &text), error: Box::new(error) }
}
