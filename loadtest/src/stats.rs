//! Percentiles and histograms over recorded samples.

use serde::Serialize;

/// The value at quantile `q` (0..=1) of sorted `values` (nearest rank), or 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts in place (NaN last) and returns the slice, for [`quantile`].
pub fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// min/p50/p90/p99/max of a distribution.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: Vec<f64>) -> Self {
        let values = sorted(values);
        let count = values.len();
        let mean = if count == 0 { 0.0 } else { values.iter().sum::<f64>() / count as f64 };
        Self {
            count,
            mean,
            min: values.first().copied().unwrap_or(0.0),
            p50: quantile(&values, 0.5),
            p90: quantile(&values, 0.9),
            p99: quantile(&values, 0.99),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// A histogram bin: `[from, to)` and its count.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Bin {
    pub from: f64,
    pub to: f64,
    pub count: u64,
}

/// `bins` equal bins from 0 to the largest value.
pub fn histogram(values: &[f64], bins: usize) -> Vec<Bin> {
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let bins = bins.max(1);
    let width = if max > 0.0 { max / bins as f64 } else { 1.0 };
    let mut out: Vec<Bin> =
        (0..bins).map(|i| Bin { from: i as f64 * width, to: (i + 1) as f64 * width, count: 0 }).collect();
    for v in values {
        let i = ((v / width) as usize).min(bins - 1);
        out[i].count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v = sorted((1..=100).map(f64::from).collect());
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        let s = Spread::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.count, s.p50, s.max, s.mean), (3, 2.0, 3.0, 2.0));
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let h = histogram(&[0.0, 0.5, 1.0, 9.9, 10.0], 10);
        assert_eq!(h.iter().map(|b| b.count).sum::<u64>(), 5);
        assert_eq!(h[0].count, 2);
        assert_eq!(h[9].count, 2);
    }
}
