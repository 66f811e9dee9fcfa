//! Pruning rules on plain `f32` slices: takes weights (row-major, as candle lays them out) and
//! a rule, zeroes the chosen weights in place, and returns how many the rule chose; for
//! structured pruning, takes a weight and returns its output-channel norms and the channels
//! to keep; and gives the cubic schedule of gradual pruning.
//!
//! - [`magnitude`]: unstructured magnitude pruning, by sparsity (globally or per tensor) or
//!   by threshold.
//! - [`n_of_m`]: keep the `n` largest of every `m` consecutive weights of a row.
//! - [`channel_norms`] and [`channels_to_keep`]: the L2 norm of each output channel, and
//!   which channels survive when the weakest are removed.
//! - [`cubic_schedule`]: the target sparsity after each round of gradual pruning.
//!
//! Magnitudes are ordered by the bit pattern of `|w|`: for non-negative floats the `u32`
//! pattern orders exactly like the value, `-0.0` and `0.0` share a pattern, and every NaN is
//! mapped to one pattern just above infinity, so a NaN counts as the largest magnitude and
//! NaNs tie with each other. Ties are always broken by position, the lower index pruned first.
//!
//! Sparsity selection is linear in the number of weights and never a sort. It first guesses:
//! a sample of the weights (a few thousand cache lines spread over the scope) gives a narrow
//! bracket of patterns that should hold the k-th smallest magnitude, and one read-only,
//! vectorised pass counts the weights below and inside it. When the bracket holds the
//! threshold, which it does for all but adversarial data, one masking pass zeroes every weight
//! below the bracket while it collects the few inside, among which the exact threshold is then
//! chosen: two passes over the data in all, the first of which only reads.
//!
//! When the guess misses, a radix select takes over: one parallel histogram pass over the top
//! 16 bits of the pattern finds the bucket that holds the k-th smallest magnitude, and the
//! same masking pass collects that bucket. When the bucket is too large to collect (many
//! equal values), extra histogram passes over the bucket's members refine it down to the
//! exact threshold pattern, and the masking pass uses per-chunk counts of that pattern to keep
//! the index rule exact while chunks run in parallel. Either way the result is exact; the
//! sample only decides how fast it comes.

use rayon::prelude::*;
use tracing::debug;

use crate::check::spec::{PruneAmount, Scope};

/// Clears the sign bit of an `f32` pattern, giving the pattern of `|w|`.
const ABS_MASK: u32 = 0x7fff_ffff;

/// The pattern every NaN is mapped to: one above infinity, so all NaNs tie as the largest.
const NAN_KEY: u32 = 0x7f80_0001;

/// Bits of the pattern resolved by the first histogram pass; the other 15 are resolved among
/// the members of one bucket. 2^16 counters (256 KiB) fit the L2 cache of every current core.
const TOP_BITS: u32 = 16;

/// The shift that leaves the top [`TOP_BITS`] of a 31-bit pattern.
const TOP_SHIFT: u32 = 31 - TOP_BITS;

/// The shifts of the refinement passes after the first: bits 14..7, then bits 6..0. Buckets
/// of 2^8 counters keep the per-chunk histograms of a refinement pass small.
const REFINE_SHIFTS: [u32; 2] = [7, 0];

/// Why an N:M pattern could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum PruneError {
    #[error("`n_of_m({n}, {m})` needs m of at least 1 and n of at most m")]
    #[diagnostic(code(recipe::prune::pattern))]
    Pattern { n: usize, m: usize },
    #[error("rows of {row_len} weights do not split into groups of {m}")]
    #[diagnostic(
        code(recipe::prune::row_length),
        help("an N:M pattern needs every row length to be a multiple of m")
    )]
    RowLength { row_len: usize, m: usize },
    #[error("{len} weights do not make whole rows of {row_len}")]
    #[diagnostic(code(recipe::prune::rows))]
    Rows { len: usize, row_len: usize },
}

/// Zero the weights of smallest magnitude across `tensors`, in place, and return the number
/// of weights the rule chose (all of them now zero).
///
/// - `Threshold(t)`: every weight with `|w| < t` becomes zero, tensor by tensor; `scope`
///   plays no part. The count includes weights that were zero already when `t > 0`.
/// - `Sparsity(s)`: in each scope (all tensors together for [`Scope::Global`], each tensor
///   alone for [`Scope::Layer`]) of `n` weights, exactly `round(s * n)` weights become
///   zero, those of smallest magnitude. The rounding is half to even, as Python's `round`
///   and so PyTorch's pruning do. Ties are broken by index, the lower pruned first; for
///   `Global` the index is the position in the concatenation of `tensors` in the given
///   order. Weights that are zero already are the smallest, so they are among the chosen,
///   and the count returned is the sum of `round(s * n)` over the scopes. `s` is clamped
///   to `[0, 1]`, and a NaN `s` prunes nothing.
///
/// A NaN weight counts as larger than every number, infinity included.
///
/// ```
/// use recipe::check::spec::{PruneAmount, Scope};
/// use recipe::nn::prune::magnitude;
///
/// let mut a = vec![0.3, -0.1, 0.2, 0.1];
/// let mut b = vec![-0.4, 0.05, 0.6, 0.7];
/// let zeroed = magnitude(&mut [&mut a, &mut b], PruneAmount::Sparsity(0.25), Scope::Global);
/// assert_eq!(zeroed, 2);
/// // 0.05 goes, and of the tied 0.1s the one at the lower index.
/// assert_eq!((a, b), (vec![0.3, 0.0, 0.2, 0.1], vec![-0.4, 0.0, 0.6, 0.7]));
/// ```
pub fn magnitude(tensors: &mut [&mut [f32]], amount: PruneAmount, scope: Scope) -> usize {
    magnitude_with(tensors, amount, scope, &Tuning::DEFAULT)
}

/// How [`magnitude`] splits its work; tests shrink these to reach every path on small input.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    /// Scopes of at most this many weights are selected directly on a copy of their
    /// patterns: a 2^16-bucket histogram would cost more than the data.
    small: usize,
    /// Weights per chunk, the unit of parallel work; at most `u32::MAX`, as candidates
    /// store their offset in a chunk as `u32`.
    chunk: usize,
    /// The bucket holding the threshold is collected in the masking pass only while it has
    /// at most `n >> cap_shift` members (plus `small`), bounding the extra memory.
    cap_shift: u32,
    /// Runs of consecutive weights sampled to guess the threshold; 0 skips the guess.
    sample_runs: usize,
    /// Weights per sampled run: 16 `f32` are one cache line, so a run costs one miss.
    run_len: usize,
}

impl Tuning {
    const DEFAULT: Tuning =
        Tuning { small: 1 << 16, chunk: 1 << 18, cap_shift: 4, sample_runs: 8192, run_len: 16 };
}

fn magnitude_with(
    tensors: &mut [&mut [f32]],
    amount: PruneAmount,
    scope: Scope,
    tuning: &Tuning,
) -> usize {
    match (amount, scope) {
        (PruneAmount::Threshold(t), _) => tensors.iter_mut().map(|xs| threshold(xs, t)).sum(),
        (PruneAmount::Sparsity(s), Scope::Global) => {
            let n = tensors.iter().map(|xs| xs.len()).sum();
            let k = prune_count(s, n);
            prune_smallest(tensors, n, k, tuning);
            k
        }
        (PruneAmount::Sparsity(s), Scope::Layer) => tensors
            .iter_mut()
            .map(|xs| {
                let n = xs.len();
                let k = prune_count(s, n);
                prune_smallest(&mut [&mut **xs], n, k, tuning);
                k
            })
            .sum(),
    }
}

/// The number of weights a sparsity `s` prunes of `n`: `round(s * n)`, half to even.
pub fn prune_count(s: f64, n: usize) -> usize {
    // `clamp` keeps a NaN, and the cast below turns a NaN into 0.
    let s = s.clamp(0.0, 1.0);
    ((s * n as f64).round_ties_even() as usize).min(n)
}

/// The sortable pattern of `|w|`, with every NaN mapped to one pattern just above infinity.
#[inline(always)]
pub fn key(w: f32) -> u32 {
    (w.to_bits() & ABS_MASK).min(NAN_KEY)
}

/// Zero every `|w| < t` of one tensor and return how many there were.
fn threshold(xs: &mut [f32], t: f64) -> usize {
    // The comparison is done in f64, where both sides are exact, so that a threshold between
    // two f32 values behaves as written. A NaN on either side compares false and is kept.
    xs.par_chunks_mut(Tuning::DEFAULT.chunk)
        .map(|chunk| {
            let mut zeroed = 0;
            for w in chunk.iter_mut() {
                let below = f64::from(w.abs()) < t;
                zeroed += usize::from(below);
                *w = if below { 0.0 } else { *w };
            }
            zeroed
        })
        .sum()
}

/// Zero the `k` weights of smallest (pattern, index) in the concatenation of `tensors`,
/// which hold `n` weights in all.
fn prune_smallest(tensors: &mut [&mut [f32]], n: usize, k: usize, tuning: &Tuning) {
    if k == 0 {
        return;
    }
    if k >= n {
        for xs in tensors.iter_mut() {
            xs.fill(0.0);
        }
        return;
    }
    if n <= tuning.small {
        prune_smallest_direct(tensors, n, k);
        return;
    }
    let chunk = tuning.chunk.clamp(1, u32::MAX as usize);
    let mut chunks: Vec<&mut [f32]> =
        tensors.iter_mut().flat_map(|xs| xs.chunks_mut(chunk)).collect();
    let cap = (n >> tuning.cap_shift.min(63)) + tuning.small;

    // Guess a bracket from a sample and count what it holds; when the threshold is inside and
    // the bracket is small enough to collect, one masking pass finishes the work.
    if let Some(bracket) = sample_bracket(&chunks, n, k, tuning) {
        let (below, inside) = count_bracket(&chunks, bracket);
        let k = k as u64;
        if below <= k && k <= below + inside && inside <= cap as u64 {
            mask_and_collect(&mut chunks, bracket, k - below);
            return;
        }
        debug!(below, inside, k, "the sampled bracket missed the threshold; selecting by radix");
    }

    // Find the top-16-bit bucket that holds the k-th smallest pattern.
    let hist = top_histogram(&chunks, n);
    let (bucket, below) = find_bucket(&hist, k as u64);
    let mut sel = Selection {
        prefix: bucket as u32,
        shift: TOP_SHIFT,
        need: k as u64 - below,
        members: hist[bucket],
        per_chunk: None,
    };

    // Refine the bucket while it is too large to collect and bits remain.
    for new_shift in REFINE_SHIFTS {
        if sel.members <= cap as u64 {
            break;
        }
        sel.refine(&chunks, new_shift);
    }

    match &sel.per_chunk {
        Some(per_chunk) if sel.shift == 0 && sel.members > cap as u64 => {
            mask_exact(&mut chunks, sel.prefix, sel.need, per_chunk);
        }
        _ => {
            let lo = sel.prefix << sel.shift;
            let bracket = Bracket { lo, hi: lo + ((1 << sel.shift) - 1) };
            mask_and_collect(&mut chunks, bracket, sel.need);
        }
    }
}

/// The patterns `lo..=hi` (of [`key`]), which should hold the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bracket {
    lo: u32,
    hi: u32,
}

impl Bracket {
    /// The bounds as signed integers over the raw pattern `bits & ABS_MASK`, which hot loops
    /// compare without mapping NaNs to [`NAN_KEY`]: every pattern is below 2^31, so signed
    /// and unsigned order agree (SSE2 has only signed vector compares), a raw NaN lies at or
    /// above every `lo`, and a bracket that reaches [`NAN_KEY`] reaches every raw NaN.
    #[inline(always)]
    fn raw_bounds(self) -> (i32, i32) {
        let hi = if self.hi >= NAN_KEY { ABS_MASK } else { self.hi };
        (self.lo as i32, hi as i32)
    }
}

/// The raw pattern of `|w|` as a signed integer; see [`Bracket::raw_bounds`].
#[inline(always)]
fn raw(w: f32) -> i32 {
    (w.to_bits() & ABS_MASK) as i32
}

/// A bracket around the k-th smallest of `n` patterns, guessed from runs of weights spread
/// evenly over the chunks; `None` when sampling is off or the scope is too small for it.
///
/// The bracket reaches a few standard errors of the sample quantile to either side of rank
/// `k`. Runs are short and many, so even weights whose scale changes from row to row are
/// sampled fairly; a guess that misses costs one read-only pass, never a wrong result.
fn sample_bracket(chunks: &[&mut [f32]], n: usize, k: usize, tuning: &Tuning) -> Option<Bracket> {
    let (runs, run_len) = (tuning.sample_runs, tuning.run_len.max(1));
    if runs == 0 || runs * run_len * 4 > n {
        return None;
    }

    // Sample: `runs` runs starting at evenly spaced positions of the whole scope.
    let starts: Vec<usize> = chunks
        .iter()
        .scan(0, |offset, xs| {
            let start = *offset;
            *offset += xs.len();
            Some(start)
        })
        .collect();
    let mut keys = Vec::with_capacity(runs * run_len);
    for r in 0..runs {
        let at = (r as u128 * (n - run_len) as u128 / (runs - 1).max(1) as u128) as usize;
        let mut c = starts.partition_point(|&s| s <= at).saturating_sub(1);
        let mut offset = at - starts[c];
        for _ in 0..run_len {
            while offset >= chunks[c].len() {
                offset -= chunks[c].len();
                c += 1;
            }
            keys.push(key(chunks[c][offset]));
            offset += 1;
        }
    }

    // The bracket: sample ranks a margin to either side of the target quantile.
    let m = keys.len();
    let p = k as f64 / n as f64;
    let margin = 4.0 * (p * (1.0 - p) / m as f64).sqrt() + 8.0 / m as f64;
    let rank = |q: f64| ((q * m as f64).floor().max(0.0) as usize).min(m - 1);
    let (lo_rank, hi_rank) = (rank(p - margin), rank(p + margin));

    // After the first selection the upper rank lies among the keys above the lower one, so
    // the second selection only needs to look there.
    let (lo, above) = if p - margin <= 0.0 {
        (0, &mut keys[..])
    } else {
        let (_, &mut lo, above) = keys.select_nth_unstable(lo_rank);
        (lo, above)
    };
    let hi = match hi_rank.checked_sub(m - above.len()) {
        _ if p + margin >= 1.0 => NAN_KEY,
        Some(at) if at < above.len() => *above.select_nth_unstable(at).1,
        _ => lo,
    };
    Some(Bracket { lo, hi })
}

/// How many weights lie below `bracket`, and how many inside it, in one read-only pass.
fn count_bracket(chunks: &[&mut [f32]], bracket: Bracket) -> (u64, u64) {
    let (lo, hi) = bracket.raw_bounds();

    // Chunks hold at most `u32::MAX` weights, so per-chunk counts fit a u32, and the
    // branch-free loop vectorises.
    chunks
        .par_iter()
        .map(|xs| {
            let (mut below, mut above) = (0u32, 0u32);
            for &w in xs.iter() {
                let kk = raw(w);
                below += u32::from(kk < lo);
                above += u32::from(kk > hi);
            }
            let inside = xs.len() as u64 - u64::from(below) - u64::from(above);
            (u64::from(below), inside)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The state of a radix select: the members of the bucket `prefix` (patterns whose bits
/// above `shift` equal it) hold the threshold, and the `need` smallest of them are pruned.
struct Selection {
    prefix: u32,
    shift: u32,
    /// How many members to prune, at least 1 and at most `members`.
    need: u64,
    members: u64,
    /// The members in each chunk, known once a refinement pass has run.
    per_chunk: Option<Vec<u64>>,
}

impl Selection {
    /// Narrow the bucket to the bits above `new_shift` with one pass over its members.
    fn refine(&mut self, chunks: &[&mut [f32]], new_shift: u32) {
        let bits = self.shift - new_shift;
        let (prefix, shift) = (self.prefix, self.shift);
        let low_mask = (1u32 << bits) - 1;

        // Each chunk counts its members by their next bits; the counts stay per chunk so
        // that the masking pass can later apply the index rule chunk by chunk.
        let per_chunk: Vec<Vec<u32>> = chunks
            .par_iter()
            .map(|xs| {
                let mut hist = vec![0u32; 1 << bits];
                for &w in xs.iter() {
                    let kk = key(w);
                    if kk >> shift == prefix {
                        if let Some(c) = hist.get_mut(((kk >> new_shift) & low_mask) as usize) {
                            *c += 1;
                        }
                    }
                }
                hist
            })
            .collect();
        let mut hist = vec![0u64; 1 << bits];
        for chunk_hist in &per_chunk {
            for (total, &c) in hist.iter_mut().zip(chunk_hist) {
                *total += u64::from(c);
            }
        }

        let (sub, below) = find_bucket(&hist, self.need);
        self.prefix = (prefix << bits) | sub as u32;
        self.shift = new_shift;
        self.need -= below;
        self.members = hist[sub];
        self.per_chunk =
            Some(per_chunk.iter().map(|h| h.get(sub).map_or(0, |&c| u64::from(c))).collect());
    }
}

/// Counts of the top 16 bits of every pattern, over all chunks.
fn top_histogram(chunks: &[&mut [f32]], n: usize) -> Vec<u64> {
    // One histogram per worker rather than per chunk: 2^16 counters cost as much to clear
    // and merge as a quarter of a chunk costs to count. Groups hold under 2^32 weights, so
    // their u32 counters cannot overflow.
    let groups = rayon::current_num_threads().max(n.div_ceil(1 << 31)).max(1);
    let per_group = chunks.len().div_ceil(groups).max(1);
    let partials: Vec<Box<[u32; 1 << TOP_BITS]>> = chunks
        .par_chunks(per_group)
        .map(|group| {
            let mut hist = Box::new([0u32; 1 << TOP_BITS]);
            for xs in group {
                for &w in xs.iter() {
                    hist[(key(w) >> TOP_SHIFT) as usize & ((1 << TOP_BITS) - 1)] += 1;
                }
            }
            hist
        })
        .collect();
    let mut hist = vec![0u64; 1 << TOP_BITS];
    for partial in &partials {
        for (total, &c) in hist.iter_mut().zip(partial.iter()) {
            *total += u64::from(c);
        }
    }
    hist
}

/// The bucket where the running count of `hist` reaches `rank` (1-based), and the count of
/// all lower buckets. `rank` must be at least 1 and at most the total.
fn find_bucket(hist: &[u64], rank: u64) -> (usize, u64) {
    let mut below = 0;
    for (bucket, &c) in hist.iter().enumerate() {
        if below + c >= rank {
            return (bucket, below);
        }
        below += c;
    }
    // Unreachable for a valid rank; the last bucket keeps the caller's arithmetic sound.
    let last = hist.len().saturating_sub(1);
    (last, below.saturating_sub(hist.get(last).copied().unwrap_or(0)))
}

/// Zero the weights of one line (16 weights, one cache line, or fewer at the end) below the
/// raw `bounds`, and say whether any lies inside them. Branch-free, so that it vectorises.
#[inline(always)]
fn mask_line(line: &mut [f32], (lo, hi): (i32, i32)) -> bool {
    let mut inside = false;
    for w in line.iter_mut() {
        let kk = raw(*w);
        inside |= (kk >= lo) & (kk <= hi);
        *w = if kk < lo { 0.0 } else { *w };
    }
    inside
}

/// Push (offset of the weight, key) for each weight of `line` inside the raw `bounds`.
#[inline]
fn collect_line(line: &[f32], offset: usize, (lo, hi): (i32, i32), found: &mut Vec<(u32, u32)>) {
    // Writing every weight to the next free slot and advancing only past members compacts
    // them without a branch per weight, which would mispredict on members spread at random.
    let mut slots = [(0u32, 0u32); 16];
    let mut n = 0;
    for (i, &w) in line.iter().enumerate().take(16) {
        let kk = raw(w);
        slots[n] = ((offset + i) as u32, key(w));
        n += usize::from((kk >= lo) & (kk <= hi));
    }
    found.extend_from_slice(&slots[..n]);
}

/// The masking pass when the threshold lies in a small bracket: zero every pattern below the
/// bracket, collect the bracket's members, then zero the `need` smallest of them (by pattern,
/// then index).
fn mask_and_collect(chunks: &mut [&mut [f32]], bracket: Bracket, need: u64) {
    let bounds = bracket.raw_bounds();
    let candidates: Vec<Vec<(u32, u32)>> = chunks
        .par_iter_mut()
        .map(|xs| {
            let mut found = Vec::new();
            let (lines, rest) = xs.as_chunks_mut::<16>();
            for (i, line) in lines.iter_mut().enumerate() {
                if mask_line(line, bounds) {
                    collect_line(line, i * 16, bounds, &mut found);
                }
            }
            let at = lines.len() * 16;
            if mask_line(rest, bounds) {
                collect_line(rest, at, bounds, &mut found);
            }
            found
        })
        .collect();

    // The threshold is the need-th smallest member pattern; the members below it go, and
    // of those equal to it the first in index order, as many as are still needed.
    let mut keys: Vec<u32> = candidates.iter().flatten().map(|&(_, kk)| kk).collect();
    if keys.is_empty() || need == 0 {
        return;
    }
    let need = usize::try_from(need).unwrap_or(usize::MAX).min(keys.len());
    let t = *keys.select_nth_unstable(need - 1).1;
    let below = keys.iter().filter(|&&kk| kk < t).count();
    let mut ties_left = need - below;
    for (xs, found) in chunks.iter_mut().zip(&candidates) {
        for &(i, kk) in found {
            let prune = kk < t || (kk == t && ties_left > 0);
            if kk == t && ties_left > 0 {
                ties_left -= 1;
            }
            if prune {
                if let Some(w) = xs.get_mut(i as usize) {
                    *w = 0.0;
                }
            }
        }
    }
}

/// The masking pass when the threshold pattern `t` is exact but shared by many weights: zero
/// every pattern below it, and in each chunk as many equal to it as the index rule gives
/// that chunk, `need` in all; `per_chunk` counts the weights equal to `t` in each chunk.
fn mask_exact(chunks: &mut [&mut [f32]], t: u32, need: u64, per_chunk: &[u64]) {
    // A chunk's quota of ties is what the earlier chunks leave of `need`.
    let mut before = 0u64;
    let quotas: Vec<u64> = per_chunk
        .iter()
        .map(|&c| {
            let quota = c.min(need.saturating_sub(before));
            before += c;
            quota
        })
        .collect();

    chunks.par_iter_mut().zip(quotas.par_iter()).for_each(|(xs, &quota)| {
        let mut ties_left = quota;
        for w in xs.iter_mut() {
            let kk = key(*w);
            let tie = kk == t && ties_left > 0;
            ties_left -= u64::from(tie);
            *w = if kk < t || tie { 0.0 } else { *w };
        }
    });
}

/// Selection for a small scope: the k-th smallest pattern of a copy, then one masking pass.
fn prune_smallest_direct(tensors: &mut [&mut [f32]], n: usize, k: usize) {
    let mut keys = Vec::with_capacity(n);
    for xs in tensors.iter() {
        keys.extend(xs.iter().map(|&w| key(w)));
    }
    // The caller ensures 1 <= k < n, so the position is in range.
    let t = *keys.select_nth_unstable(k - 1).1;
    let below = keys.iter().filter(|&&kk| kk < t).count();
    let mut ties_left = k - below;
    for xs in tensors.iter_mut() {
        for w in xs.iter_mut() {
            let kk = key(*w);
            let tie = kk == t && ties_left > 0;
            ties_left -= usize::from(tie);
            *w = if kk < t || tie { 0.0 } else { *w };
        }
    }
}

/// In every group of `m` consecutive weights of each row (rows of `row_len` weights), keep
/// the `n` of largest magnitude and zero the rest; of equal magnitudes the lower index is
/// kept, and a NaN counts as the largest.
///
/// Fails, changing nothing, when `m` is 0 or `n > m`, when `row_len` is not a positive
/// multiple of `m`, or when `values` is not a whole number of rows.
///
/// ```
/// use recipe::nn::prune::n_of_m;
///
/// let mut xs = vec![0.1, -0.5, 0.3, 0.2, 1.0, 1.0, 1.0, 0.0];
/// n_of_m(&mut xs, 8, 2, 4).unwrap();
/// assert_eq!(xs, vec![0.0, -0.5, 0.3, 0.0, 1.0, 1.0, 0.0, 0.0]);
/// ```
pub fn n_of_m(values: &mut [f32], row_len: usize, n: usize, m: usize) -> Result<(), PruneError> {
    if m == 0 || n > m {
        return Err(PruneError::Pattern { n, m });
    }
    if row_len == 0 || !row_len.is_multiple_of(m) {
        return Err(PruneError::RowLength { row_len, m });
    }
    if !values.len().is_multiple_of(row_len) {
        return Err(PruneError::Rows { len: values.len(), row_len });
    }
    if n == m {
        return Ok(());
    }

    // Rows split into groups of m, so the groups of the whole slice are the groups of the
    // rows. Small groups rank each weight against the others directly; large ones select.
    values.par_chunks_mut(m).with_min_len(1 << 12).for_each_init(Vec::new, |scratch, group| {
        if m <= 16 {
            keep_largest_small(group, n);
        } else {
            keep_largest_select(group, n, scratch);
        }
    });
    Ok(())
}

/// Keep the `n` largest of a group of at most 16 by counting, for each weight, the weights
/// that outrank it: a larger pattern, or an equal one at a lower index.
fn keep_largest_small(group: &mut [f32], n: usize) {
    let mut keys = [0u32; 16];
    for (slot, &w) in keys.iter_mut().zip(group.iter()) {
        *slot = key(w);
    }
    let keys = &keys[..group.len().min(16)];
    for (i, w) in group.iter_mut().enumerate() {
        let ki = keys[i.min(keys.len().saturating_sub(1))];
        let outranked_by =
            keys.iter().enumerate().filter(|&(j, &kj)| kj > ki || (kj == ki && j < i)).count();
        if outranked_by >= n {
            *w = 0.0;
        }
    }
}

/// Keep the `n` largest of a group by selecting on (pattern descending, index ascending).
fn keep_largest_select(group: &mut [f32], n: usize, scratch: &mut Vec<(u32, usize)>) {
    scratch.clear();
    scratch.extend(group.iter().enumerate().map(|(i, &w)| (key(w), i)));
    if n < scratch.len() {
        scratch.select_nth_unstable_by(n, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in &scratch[n..] {
            if let Some(w) = group.get_mut(i) {
                *w = 0.0;
            }
        }
    }
}

/// The L2 norm of each output channel of a weight of shape `[out, ...]`: row `i` is
/// `values[i * row..(i + 1) * row]` with `row = values.len() / out`. Sums are taken in f64.
///
/// With `out` of 0 the result is empty; values past `out * row`, when `values.len()` is not
/// a multiple of `out`, belong to no channel and are ignored.
///
/// ```
/// let norms = recipe::nn::prune::channel_norms(&[3.0, 4.0, 0.0, 1.0], 2);
/// assert_eq!(norms, vec![5.0, 1.0]);
/// ```
pub fn channel_norms(values: &[f32], out: usize) -> Vec<f64> {
    let Some(row) = values.len().checked_div(out) else { return Vec::new() };
    if row == 0 {
        return vec![0.0; out];
    }
    values
        .chunks_exact(row)
        .take(out)
        .map(|xs| xs.iter().map(|&w| f64::from(w) * f64::from(w)).sum::<f64>().sqrt())
        .collect()
}

/// The indices of the channels to keep when the `drop` channels of smallest norm are
/// removed, in ascending order. Of equal norms the lower index is removed first, a NaN norm
/// counts as the largest, and a `drop` beyond the channel count removes them all.
///
/// ```
/// let keep = recipe::nn::prune::channels_to_keep(&[2.0, 1.0, 1.0, 3.0], 2);
/// assert_eq!(keep, vec![0, 3]);
/// ```
pub fn channels_to_keep(norms: &[f64], drop: usize) -> Vec<usize> {
    if drop >= norms.len() {
        return Vec::new();
    }
    if drop == 0 {
        return (0..norms.len()).collect();
    }

    // Selecting (not sorting) on a total order of (norm, index) puts exactly the dropped
    // channels first; a mark per channel then lists the kept ones in index order.
    let order = |&a: &usize, &b: &usize| {
        let (x, y) = (norms[a], norms[b]);
        let by_norm = match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        };
        by_norm.then(a.cmp(&b))
    };
    let mut idx: Vec<usize> = (0..norms.len()).collect();
    idx.select_nth_unstable_by(drop - 1, order);
    let mut kept = vec![true; norms.len()];
    for &i in &idx[..drop] {
        kept[i] = false;
    }
    kept.iter().enumerate().filter(|&(_, &k)| k).map(|(i, _)| i).collect()
}

/// The target sparsity after round `round` of `rounds` of gradual pruning towards `s`:
/// `s * (1 - (1 - round / rounds)^3)`, the cubic schedule of Zhu and Gupta (2017). It rises
/// fast at first, when many weights are redundant, and levels off at `s`.
///
/// Round 0 gives 0 and round `rounds` gives `s`; a later round, or `rounds` of 0, gives `s`.
///
/// ```
/// use recipe::nn::prune::cubic_schedule;
///
/// assert_eq!(cubic_schedule(0.8, 0, 4), 0.0);
/// assert_eq!(cubic_schedule(0.8, 2, 4), 0.8 * (1.0 - 0.125));
/// assert_eq!(cubic_schedule(0.8, 4, 4), 0.8);
/// ```
pub fn cubic_schedule(s: f64, round: usize, rounds: usize) -> f64 {
    if rounds == 0 || round >= rounds {
        return s;
    }
    let left = 1.0 - round as f64 / rounds as f64;
    s * (1.0 - left * left * left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The rule by definition: sort (pattern, index) and zero the first `k`.
    fn reference(tensors: &[Vec<f32>], k: usize) -> Vec<Vec<f32>> {
        let mut all: Vec<(u32, usize, usize)> = Vec::new();
        for (t, xs) in tensors.iter().enumerate() {
            all.extend(xs.iter().enumerate().map(|(i, &w)| (key(w), t, i)));
        }
        all.sort();
        let mut out = tensors.to_vec();
        for &(_, t, i) in all.iter().take(k) {
            out[t][i] = 0.0;
        }
        out
    }

    fn bits(tensors: &[Vec<f32>]) -> Vec<Vec<u32>> {
        tensors.iter().map(|xs| xs.iter().map(|w| w.to_bits()).collect()).collect()
    }

    /// Weights of one of several kinds: smooth, few distinct values, or special values.
    fn weights(rng: &mut Rng, n: usize, kind: usize) -> Vec<f32> {
        let special = [0.0, -0.0, 0.5, -0.5, 1.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE];
        (0..n)
            .map(|i| match kind {
                0 => rng.normal() as f32,
                1 => special[rng.below(special.len())],
                2 => (rng.below(3) as f32) * 0.25,
                // Row scales that differ by orders of magnitude, as between layers.
                _ => rng.normal() as f32 * 10f32.powi((i / 97 % 5) as i32 - 2),
            })
            .collect()
    }

    const TUNINGS: [Tuning; 5] = [
        Tuning::DEFAULT,
        // The histogram path, collecting the bucket.
        Tuning { small: 0, chunk: 64, cap_shift: 0, sample_runs: 0, run_len: 16 },
        // The histogram path, refining down to the exact pattern.
        Tuning { small: 0, chunk: 7, cap_shift: 63, sample_runs: 0, run_len: 16 },
        // The sampled bracket, with chunks that split runs.
        Tuning { small: 0, chunk: 5, cap_shift: 0, sample_runs: 8, run_len: 3 },
        // A sample too small to bracket anything, falling back.
        Tuning { small: 0, chunk: 33, cap_shift: 63, sample_runs: 2, run_len: 1 },
    ];

    #[test]
    fn every_path_prunes_exactly_the_k_smallest() {
        let mut rng = Rng::new(11, "prune tests");
        for case in 0..300 {
            let kind = case % 4;
            let sizes: Vec<usize> = (0..1 + rng.below(3)).map(|_| rng.below(700)).collect();
            let tensors: Vec<Vec<f32>> =
                sizes.iter().map(|&n| weights(&mut rng, n, kind)).collect();
            let n: usize = sizes.iter().sum();
            let s = [0.0, 0.1, 0.5, 0.8, 0.9, 0.999, 1.0][case % 7];
            let k = prune_count(s, n);
            let expected = bits(&reference(&tensors, k));
            for tuning in &TUNINGS {
                let mut got = tensors.clone();
                let mut views: Vec<&mut [f32]> = got.iter_mut().map(|t| t.as_mut_slice()).collect();
                let zeroed =
                    magnitude_with(&mut views, PruneAmount::Sparsity(s), Scope::Global, tuning);
                assert_eq!(zeroed, k);
                assert_eq!(bits(&got), expected, "case {case}, sizes {sizes:?}, {tuning:?}");
            }
        }
    }

    #[test]
    fn layer_scope_prunes_each_tensor_alone() {
        let mut rng = Rng::new(12, "prune tests");
        let tensors = vec![weights(&mut rng, 300, 0), weights(&mut rng, 50, 3)];
        let mut got = tensors.clone();
        let mut views: Vec<&mut [f32]> = got.iter_mut().map(|t| t.as_mut_slice()).collect();
        assert_eq!(magnitude(&mut views, PruneAmount::Sparsity(0.5), Scope::Layer), 175);
        for (g, t) in got.iter().zip(&tensors) {
            let expected = reference(std::slice::from_ref(t), t.len() / 2);
            assert_eq!(bits(std::slice::from_ref(g)), bits(&expected));
        }
    }

    #[test]
    fn a_threshold_zeroes_what_lies_below_it() {
        let mut xs = vec![0.1, -0.2, 0.3, f32::NAN, -0.05, 0.0];
        let zeroed = magnitude(&mut [&mut xs], PruneAmount::Threshold(0.2), Scope::Global);
        assert_eq!(zeroed, 3);
        assert_eq!(format!("{xs:?}"), "[0.0, -0.2, 0.3, NaN, 0.0, 0.0]");
    }

    #[test]
    fn the_prune_count_rounds_half_to_even() {
        assert_eq!(prune_count(0.5, 5), 2);
        assert_eq!(prune_count(0.5, 7), 4);
        assert_eq!(prune_count(f64::NAN, 7), 0);
        assert_eq!(prune_count(2.0, 7), 7);
    }
}
