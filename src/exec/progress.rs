//! Progress of long steps: an indicatif bar on a terminal, one log line per
//! epoch otherwise, nothing when asked to be quiet.

use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tracing::info;

use crate::nn::train::{EpochStats, Progress};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live bar on standard error; for terminals.
    Bar,
    /// A tracing line per epoch; for logs and pipes.
    Lines,
    Quiet,
}

/// The bars of a run: steps that run side by side share one set of lines on the terminal.
pub(crate) fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Epoch progress of one training run.
pub struct EpochProgress {
    bar: Option<ProgressBar>,
    mode: ProgressMode,
    label: String,
}

impl EpochProgress {
    pub fn new(mode: ProgressMode, label: &str, epochs: usize) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = bars().add(ProgressBar::new(epochs as u64));
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} epochs {msg} ({elapsed})",
            )
            .expect("a constant template parses")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        EpochProgress { bar, mode, label: label.to_string() }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

impl Progress for EpochProgress {
    fn epoch(&self, stats: &EpochStats, total_epochs: usize) {
        let val = match (stats.val_loss, stats.val_accuracy) {
            (Some(loss), Some(acc)) => format!(", val loss {loss:.4}, val acc {acc:.4}"),
            _ => String::new(),
        };
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_position(stats.epoch as u64);
                bar.set_message(format!("loss {:.4}{val}", stats.train_loss));
            }
            (None, ProgressMode::Lines) => info!(
                "{}: epoch {}/{total_epochs}, loss {:.4}{val}",
                self.label, stats.epoch, stats.train_loss
            ),
            _ => {}
        }
    }
}
