//! Whether the training a recipe asks for fits in the machine's memory, decided before
//! anything runs: a model that cannot fit should fail in a second with the figures, not
//! after minutes of loading data, or by being killed.
//!
//! The estimate counts what training holds at once: the weights, their gradients, the
//! optimizer's state, a copy of the best weights when training stops early, the values and
//! gradients of every layer's output for one batch (with the unfolded patches of a
//! convolution), and the dataset twice (as read and as split). It leaves out allocator
//! overhead and the program itself, so it errs low: a recipe it refuses cannot fit, one it
//! passes may still be tight. A search counts one trial; trials run side by side with
//! `--jobs` need that much each.

use std::path::Path;

use super::error::CheckError;
use super::refs::Env;
use super::spec::{Arch, DataShape, Layer, Optimizer, Spec, TrainSettings};
use super::value::Errors;
use crate::syntax::ast;

/// The environment variable that caps the memory a recipe may plan for, in bytes or with a
/// unit (`8GiB`, `512MB`); for machines whose reported memory is not theirs to use.
pub const LIMIT_VAR: &str = "RECIPE_MEMORY_LIMIT";

const F32: u128 = 4;

/// What one training run holds at once, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub weights: u128,
    pub gradients: u128,
    pub optimizer: u128,
    pub activations: u128,
    pub data: u128,
}

impl Footprint {
    pub fn total(&self) -> u128 {
        self.weights + self.gradients + self.optimizer + self.activations + self.data
    }

    /// Training `arch` with `settings` on a dataset of `shape`.
    pub fn training(arch: &Arch, settings: &TrainSettings, shape: &DataShape) -> Footprint {
        let params: u128 = arch
            .params()
            .iter()
            .map(|(_, dims)| dims.iter().map(|&d| d as u128).product::<u128>())
            .sum();
        let weights = params * F32;
        let states = match settings.optimizer {
            Optimizer::Sgd { momentum, .. } if momentum > 0.0 => 1,
            Optimizer::Sgd { .. } => 0,
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => 2,
            // The candidate perturbation beside the kept weights.
            Optimizer::RandomSearch { .. } => 1,
        };
        let best = u128::from(settings.stop.is_some());
        let batch = settings.batch.min(shape.samples).max(1) as u128;
        let gradient_free = matches!(settings.optimizer, Optimizer::RandomSearch { .. });
        Footprint {
            weights: weights * (1 + best),
            gradients: if gradient_free { 0 } else { weights },
            optimizer: weights * states,
            activations: batch * per_sample(arch) * F32 * 2,
            data: data_bytes(shape),
        }
    }
}

/// The values one sample produces through the layers, counting a convolution's unfolded
/// input patches.
fn per_sample(arch: &Arch) -> u128 {
    let size = |shape: &[usize]| shape.iter().map(|&d| d as u128).product::<u128>();
    let mut total = size(&arch.input);
    for (i, layer) in arch.layers.iter().enumerate() {
        let out = &arch.shapes[i];
        total += size(out);
        if let (Layer::Conv2d { kernel, .. }, [_, h, w]) = (layer, &out[..]) {
            let input = if i == 0 { &arch.input } else { &arch.shapes[i - 1] };
            let c_in = input.first().copied().unwrap_or(1) as u128;
            total += c_in * (*kernel as u128).pow(2) * (*h as u128) * (*w as u128);
        }
    }
    total
}

/// Refuse every `data` block whose samples, and every `train` and `search` block whose
/// training, would not fit in the memory available.
pub(crate) fn check(file: &ast::File, env: &Env, available: Available, errors: &mut Errors) {
    let Some((bytes, source)) = available.0 else { return };
    for block in &file.blocks {
        let (need, parts) = match env.spec(&block.name.name) {
            Some(Spec::Data(data)) => {
                let need = data_bytes(&data.shape);
                (need, format!("its samples, as read and as split, take {}", size(need)))
            }
            Some(Spec::Train(t)) => training(env, t),
            Some(Spec::Search(s)) => training(env, &s.train),
            _ => continue,
        };
        if need > u128::from(bytes) {
            errors.push(CheckError::TooLarge {
                span: block.name.span,
                kind: block.kind.name.clone(),
                name: block.name.name.clone(),
                need: size(need),
                parts,
                available: size(u128::from(bytes)),
                figure_from: source,
            });
        }
    }
}

/// What training `train` needs, and the parts of it in words.
fn training(env: &Env, train: &super::spec::TrainSpec) -> (u128, String) {
    let Some(Spec::Data(data)) = env.spec(&train.data.block) else { return (0, String::new()) };
    let f = Footprint::training(&train.arch, &train.settings, &data.shape);
    let parts = format!(
        "it needs weights {}, gradients {}, optimizer state {}, activations of a batch {} and \
         data {}",
        size(f.weights),
        size(f.gradients),
        size(f.optimizer),
        size(f.activations),
        size(f.data)
    );
    (f.total(), parts)
}

/// A dataset held twice, as read and as split: features and a label per sample, as `f32`.
fn data_bytes(shape: &DataShape) -> u128 {
    let sample: u128 = shape.features.iter().map(|&d| d as u128).product();
    shape.samples as u128 * (sample + 1) * F32 * 2
}

fn size(bytes: u128) -> String {
    crate::steps::eval::human_bytes(u64::try_from(bytes).unwrap_or(u64::MAX))
}

/// The memory a run may use, in bytes, and where the figure comes from; `None` where the
/// system does not say.
#[derive(Debug, Clone, Copy)]
pub struct Available(pub Option<(u64, &'static str)>);

impl Available {
    /// What this machine has: the environment's cap if set, else the memory the kernel
    /// reports as available, lowered to what the control group leaves (containers and
    /// cluster jobs see the whole machine in `/proc/meminfo`).
    pub fn here() -> Result<Available, String> {
        if let Ok(text) = std::env::var(LIMIT_VAR) {
            let bytes = parse_size(&text)
                .ok_or_else(|| format!("{LIMIT_VAR}=`{text}` is not a size such as `8GiB`"))?;
            return Ok(Available(Some((bytes, LIMIT_VAR))));
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
        let kernel = meminfo.as_deref().and_then(mem_available);
        let group = cgroup_room();
        Ok(Available(match (kernel, group) {
            (Some(k), Some(g)) if g < k => Some((g, "the control group's memory limit")),
            (Some(k), _) => Some((k, "MemAvailable in /proc/meminfo")),
            (None, Some(g)) => Some((g, "the control group's memory limit")),
            (None, None) => None,
        }))
    }
}

fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The limit of this process's control group less what it uses, under cgroup v2 or v1.
fn cgroup_room() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).ok();
    let number = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let (limit, used) = match number(read("/sys/fs/cgroup/memory.max")) {
        Some(limit) => (limit, number(read("/sys/fs/cgroup/memory.current"))),
        None => (
            number(read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?,
            number(read("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
        ),
    };
    Some(limit.saturating_sub(used.unwrap_or(0)))
}

/// `8GiB`, `512 MB`, `1e9` or a plain number of bytes.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len();
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        _ => return None,
    };
    let bytes = number * scale;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_their_units() {
        assert_eq!(parse_size("8GiB"), Some(8 << 30));
        assert_eq!(parse_size("512 MB"), Some(512_000_000));
        assert_eq!(parse_size("1e9"), Some(1_000_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1GiB"), None);
    }

    #[test]
    fn meminfo_gives_available_bytes() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(text), Some(20_000_000 * 1024));
    }

    #[test]
    fn the_digits_mlp_needs_what_its_buffers_hold() {
        let arch = Arch::new(
            vec![64],
            vec![Layer::Linear { out: 32 }, Layer::Relu, Layer::Linear { out: 10 }],
        )
        .unwrap();
        let shape = DataShape { samples: 1797, features: vec![64], classes: 10 };
        // Adam, batches of 32.
        let settings = super::super::blocks::default_settings();
        let f = Footprint::training(&arch, &settings, &shape);
        let params = 64 * 32 + 32 + 32 * 10 + 10;
        assert_eq!(f.weights, params * 4);
        assert_eq!(f.gradients, params * 4);
        assert_eq!(f.optimizer, 2 * params * 4);
        assert_eq!(f.activations, 32 * (64 + 32 + 32 + 10) * 4 * 2);
        assert_eq!(f.data, 1797 * 65 * 4 * 2);
    }
}
