//! Search spaces: takes the checked dimensions of a `search` and returns the values of each
//! trial, drawn at random from the recipe's seed or laid out as a grid.
//!
//! Random trial `i` draws its values from a generator seeded by the step's seed and `i`
//! alone, so a trial's values never depend on how many trials there are, which ones ran
//! before, or how many ran side by side. A grid is the cartesian product of the dimensions'
//! values in the order the space lists them, the last varying fastest; a continuous
//! dimension contributes `points` values evenly spaced (on a log scale for `loguniform`),
//! both ends included.

use crate::check::spec::{Dimension, Distribution, Scalar};
use crate::rng::Rng;

/// The values of one trial, one per dimension, in the order of the space.
pub type Values = Vec<Scalar>;

/// The values of random trial `index`.
pub fn random(dims: &[Dimension], seed: u64, index: usize) -> Values {
    let mut rng = Rng::new(seed, &format!("search trial {index}"));
    dims.iter().map(|d| draw(&d.dist, &mut rng)).collect()
}

fn draw(dist: &Distribution, rng: &mut Rng) -> Scalar {
    match dist {
        Distribution::Uniform { low, high, .. } => Scalar::Float(rng.uniform_in(*low, *high)),
        Distribution::LogUniform { low, high, .. } => {
            Scalar::Float(rng.uniform_in(low.ln(), high.ln()).exp().clamp(*low, *high))
        }
        Distribution::Range { low, high } => {
            let span = usize::try_from(high - low).unwrap_or(0) + 1;
            Scalar::Int(low + rng.below(span) as i64)
        }
        Distribution::Choice(values) => values[rng.below(values.len())].clone(),
    }
}

/// Every point of the grid, in order.
pub fn grid(dims: &[Dimension]) -> Vec<Values> {
    let axes: Vec<Vec<Scalar>> = dims.iter().map(|d| axis(&d.dist)).collect();
    let mut points: Vec<Values> = vec![Vec::new()];
    for axis in &axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.iter().map(move |v| {
                    let mut next = p.clone();
                    next.push(v.clone());
                    next
                })
            })
            .collect();
    }
    points
}

/// The values one dimension takes in a grid.
fn axis(dist: &Distribution) -> Vec<Scalar> {
    let spaced = |low: f64, high: f64, points: usize, map: fn(f64) -> f64, inv: fn(f64) -> f64| {
        let n = points.max(1);
        (0..n)
            .map(|k| {
                if n == 1 {
                    return Scalar::Float(low);
                }
                let t = k as f64 / (n - 1) as f64;
                // The ends are given exactly rather than through the map and back.
                let x = match k {
                    0 => low,
                    k if k == n - 1 => high,
                    _ => inv(map(low) + t * (map(high) - map(low))),
                };
                Scalar::Float(x)
            })
            .collect()
    };
    match dist {
        Distribution::Uniform { low, high, points } => {
            spaced(*low, *high, points.unwrap_or(1), |x| x, |x| x)
        }
        Distribution::LogUniform { low, high, points } => {
            spaced(*low, *high, points.unwrap_or(1), f64::ln, f64::exp)
        }
        Distribution::Range { low, high } => (*low..=*high).map(Scalar::Int).collect(),
        Distribution::Choice(values) => values.clone(),
    }
}

/// A value as the recipe language writes it.
pub fn show(value: &Scalar) -> String {
    match value {
        Scalar::Int(n) => n.to_string(),
        Scalar::Float(x) => format!("{x:.6e}"),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Word(w) => w.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(path: &str, dist: Distribution) -> Dimension {
        Dimension { path: path.into(), dist }
    }

    #[test]
    fn random_trials_depend_on_their_index_alone() {
        let dims = [
            dim("optimizer.lr", Distribution::LogUniform { low: 1e-3, high: 1.0, points: None }),
            dim("batch", Distribution::Choice(vec![Scalar::Int(16), Scalar::Int(32)])),
            dim("epochs", Distribution::Range { low: 5, high: 7 }),
        ];
        let a: Vec<Values> = (0..50).map(|i| random(&dims, 9, i)).collect();
        assert_eq!(random(&dims, 9, 17), a[17]);
        assert_ne!(random(&dims, 10, 17), a[17], "the seed matters");
        for values in &a {
            let Scalar::Float(lr) = values[0] else { panic!("a float") };
            assert!((1e-3..=1.0).contains(&lr));
            let Scalar::Int(e) = values[2] else { panic!("an integer") };
            assert!((5..=7).contains(&e));
        }
        // Over 50 draws every epoch count and both batch sizes turn up.
        for e in 5..=7 {
            assert!(a.iter().any(|v| v[2] == Scalar::Int(e)));
        }
        assert!(a.iter().any(|v| v[1] == Scalar::Int(16)));
    }

    #[test]
    fn grids_are_cartesian_products_with_exact_ends() {
        let dims = [
            dim("optimizer.lr", Distribution::LogUniform { low: 1e-3, high: 0.1, points: Some(3) }),
            dim("epochs", Distribution::Range { low: 1, high: 2 }),
        ];
        let g = grid(&dims);
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec![Scalar::Float(1e-3), Scalar::Int(1)]);
        assert_eq!(g[1], vec![Scalar::Float(1e-3), Scalar::Int(2)]);
        let Scalar::Float(mid) = g[2][0] else { panic!("a float") };
        assert!((mid - 1e-2).abs() < 1e-12, "{mid}");
        assert_eq!(g[5], vec![Scalar::Float(0.1), Scalar::Int(2)]);
    }
}
