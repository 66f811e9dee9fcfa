//! Channel surgery: removing whole output channels of a layer together with
//! what reads them, so that a channel-pruned model is a smaller dense model.
//!
//! Removing output channel `c` of layer `L` removes row `c` of its weight
//! (filter `c` of a convolution) and entry `c` of its bias, and the inputs
//! that carried `c` in the next layer with parameters: column `c` of a
//! linear layer, input channel `c` of a convolution, or, after a `flatten`,
//! the block of `H * W` columns that the flattened channel became.

use candle_core::{Result, Tensor};

use super::Weights;
use crate::check::spec::{Arch, Layer};

/// The layer that reads a layer's output channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    /// Its position in the layer list.
    pub layer: usize,
    /// How many of its inputs one channel of the pruned layer feeds: 1, or
    /// `H * W` when a `flatten` lies between.
    pub block: usize,
}

/// The layer whose inputs shrink when `layer` loses output channels, or why
/// there is none.
pub fn successor(arch: &Arch, layer: usize) -> std::result::Result<Successor, String> {
    match arch.layers.get(layer) {
        Some(Layer::Linear { .. } | Layer::Conv2d { .. }) => {}
        _ => return Err(format!("layer {layer} is not a linear or conv2d layer")),
    }
    let mut block = 1;
    for (j, next) in arch.layers.iter().enumerate().skip(layer + 1) {
        match next {
            Layer::Linear { .. } | Layer::Conv2d { .. } => {
                return Ok(Successor { layer: j, block })
            }
            Layer::Flatten => {
                // A channel of shape [H, W] becomes H * W consecutive columns.
                let input = &arch.shapes[j - 1];
                block = input.iter().skip(1).product::<usize>().max(1);
            }
            Layer::Reshape { .. } => {
                return Err(format!(
                    "a reshape after layer {layer} mixes its channels, so they cannot be followed"
                ))
            }
            _ => {}
        }
    }
    Err(format!("layer {layer} has no successor: its outputs are the model's outputs"))
}

/// `weights` of `arch` with output channels of `layer` other than `keep`
/// (ascending indices) removed, and the architecture that results.
pub fn remove_channels(
    arch: &Arch,
    weights: &Weights,
    layer: usize,
    keep: &[usize],
) -> Result<(Arch, Weights)> {
    let succ = successor(arch, layer).map_err(candle_core::Error::msg)?;
    let get = |name: String| {
        weights
            .get(&name)
            .cloned()
            .ok_or_else(|| candle_core::Error::msg(format!("weight `{name}` is missing")))
    };
    let dev = get(format!("{layer}.weight"))?.device().clone();
    let rows = Tensor::from_vec(keep.iter().map(|&k| k as u32).collect(), keep.len(), &dev)?;

    let mut out = weights.clone();
    for part in ["weight", "bias"] {
        let name = format!("{layer}.{part}");
        out.insert(name.clone(), get(name)?.index_select(&rows, 0)?.contiguous()?);
    }
    let next = format!("{}.weight", succ.layer);
    let columns: Vec<u32> = keep
        .iter()
        .flat_map(|&k| (k * succ.block..(k + 1) * succ.block).map(|c| c as u32))
        .collect();
    let n_cols = columns.len();
    let columns = Tensor::from_vec(columns, n_cols, &dev)?;
    out.insert(next.clone(), get(next)?.index_select(&columns, 1)?.contiguous()?);

    let mut layers = arch.layers.clone();
    match &mut layers[layer] {
        Layer::Linear { out } | Layer::Conv2d { out, .. } => *out = keep.len(),
        _ => unreachable!("`successor` accepted only linear and conv2d layers"),
    }
    let arch = Arch::new(arch.input.clone(), layers)
        .map_err(|e| candle_core::Error::msg(format!("layer {}: {}", e.index, e.reason)))?;
    Ok((arch, out))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::nn::{forward, init};
    use crate::rng::Rng;

    fn cnn() -> Arch {
        let layers = vec![
            Layer::Conv2d { out: 4, kernel: 3, stride: 1, padding: 1 },
            Layer::Relu,
            Layer::MaxPool { k: 2 },
            Layer::Flatten,
            Layer::Linear { out: 6 },
            Layer::Relu,
            Layer::Linear { out: 3 },
        ];
        Arch::new(vec![1, 4, 4], layers).unwrap()
    }

    #[test]
    fn successors_skip_activations_and_see_flatten_blocks() {
        let arch = cnn();
        assert_eq!(successor(&arch, 0), Ok(Successor { layer: 4, block: 4 }));
        assert_eq!(successor(&arch, 4), Ok(Successor { layer: 6, block: 1 }));
        assert!(successor(&arch, 6).unwrap_err().contains("no successor"));
        assert!(successor(&arch, 1).is_err());
    }

    /// Removing channels whose outgoing weights are zero leaves the outputs
    /// unchanged: the surgery moves the right columns.
    #[test]
    fn removing_dead_channels_keeps_the_outputs() {
        let arch = cnn();
        let dev = Device::Cpu;
        let mut weights = init(&arch, &mut Rng::new(3, "init"), &dev).unwrap();
        // Kill conv channels 1 and 2 by zeroing their filters and biases: after
        // ReLU they output zeros, so the linear layer's matching columns do not
        // matter.
        let mask = Tensor::new(&[1f32, 0., 0., 1.], &dev).unwrap();
        let w = weights["0.weight"].broadcast_mul(&mask.reshape((4, 1, 1, 1)).unwrap()).unwrap();
        let b = weights["0.bias"].mul(&mask).unwrap();
        weights.insert("0.weight".into(), w);
        weights.insert("0.bias".into(), b);

        let xs = Tensor::from_vec((0..32).map(|i| i as f32 / 7.0).collect(), (2, 1, 4, 4), &dev)
            .unwrap();
        let before = forward(&arch, &weights, &xs, None).unwrap();
        let (small, pruned) = remove_channels(&arch, &weights, 0, &[0, 3]).unwrap();
        assert_eq!(small.shapes[0], vec![2, 4, 4]);
        assert_eq!(pruned["4.weight"].dims(), &[6, 8]);
        let after = forward(&small, &pruned, &xs, None).unwrap();
        let diff = (before - after).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
