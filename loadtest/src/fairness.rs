//! Did usher admit in arrival order? All counts here are O(n log n), so 20,000 visitors
//! (200 million pairs) cost milliseconds.
//!
//! A visitor cannot see the moment usher grants its turn: only that a request sent at `lo`
//! still found it waiting and that the answer received at `hi` admitted it, so the grant
//! lies in `(lo, hi)`, an interval as wide as one poll. For two visitors `a` and `b` where
//! `a` arrived first:
//! - *concordant*: `hi_a < lo_b`: `a` was certainly admitted before `b`;
//! - *discordant* (an **overtake**): `hi_b < lo_a`: `b` was admitted while `a`, who came
//!   first, was still waiting and still polling — a FIFO violation beyond doubt;
//! - otherwise the two grants are too close together to be ordered from outside.
//!
//! (The two cannot both hold: `lo < hi` for each visitor.) The tau reported is
//! `(C − D) / (C + D)` over the ordered pairs, Kendall's tau on the pairs whose admission
//! order is observable (Goodman–Kruskal's γ): 1.0 when nobody was overtaken. The classic
//! Kendall tau-b between arrival order and the order in which visitors *saw* their admission
//! is reported too ([`kendall_tau_b`]); it is blurred by the phase of each visitor's polls
//! and is below 1.0 even for a perfectly fair line whenever grants come faster than polls.

use serde::Serialize;

/// Counts per slot with prefix sums in O(log n).
struct Fenwick(Vec<u64>);

impl Fenwick {
    fn new(n: usize) -> Self {
        Self(vec![0; n + 1])
    }

    fn add(&mut self, index: usize) {
        let mut i = index + 1;
        while i < self.0.len() {
            self.0[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Sum of slots `0..index`.
    fn prefix(&self, index: usize) -> u64 {
        let mut i = index.min(self.0.len() - 1);
        let mut sum = 0;
        while i > 0 {
            sum += self.0[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// Values in ascending order, for ranks of "how many inserted values are below x".
struct Ranks(Vec<u64>);

impl Ranks {
    fn new(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        values.dedup();
        Self(values)
    }

    /// The rank of `v`: the number of distinct values below it.
    fn below(&self, v: u64) -> usize {
        self.0.partition_point(|&x| x < v)
    }
}

/// One queued visitor as fairness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    /// Arrival key: lower came first; equal keys are not compared (pre-queued visitors,
    /// whose order usher draws at random by design, share one).
    pub arrival: u64,
    /// When the last request that found it waiting was sent.
    pub lo: u64,
    /// When the answer that admitted it arrived; `None` if never admitted.
    pub hi: Option<u64>,
}

/// Pair counts between arrival order and observed admission order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pairs {
    /// Pairs with different arrival keys.
    pub compared: u64,
    pub concordant: u64,
    /// Overtakes.
    pub discordant: u64,
}

impl Pairs {
    /// `(C − D) / (C + D)`; 1.0 when no pair could be ordered.
    pub fn tau(&self) -> f64 {
        let resolved = self.concordant + self.discordant;
        if resolved == 0 { 1.0 } else { (self.concordant as f64 - self.discordant as f64) / resolved as f64 }
    }

    /// The share of compared pairs whose order was observable.
    pub fn resolved_share(&self) -> f64 {
        if self.compared == 0 { 0.0 } else { (self.concordant + self.discordant) as f64 / self.compared as f64 }
    }
}

/// Concordant and discordant pairs of `waiters` (see the module doc).
pub fn observed_order(waiters: &[Waiter]) -> Pairs {
    let mut by_arrival: Vec<Waiter> = waiters.to_vec();
    by_arrival.sort_unstable_by_key(|w| w.arrival);
    let groups = group_bounds(&by_arrival);
    let ranks = Ranks::new(by_arrival.iter().filter_map(|w| w.hi).collect());
    let n = by_arrival.len() as u64;
    let tied: u64 = groups.iter().map(|&(a, b)| pairs_of((b - a) as u64)).sum();

    // Concordant: for each b, earlier arrivals admitted before b's last waiting request.
    let mut seen = Fenwick::new(ranks.0.len());
    let mut concordant = 0;
    for &(from, to) in &groups {
        for w in &by_arrival[from..to] {
            concordant += seen.prefix(ranks.below(w.lo));
        }
        for hi in by_arrival[from..to].iter().filter_map(|w| w.hi) {
            seen.add(ranks.below(hi));
        }
    }
    // Discordant: for each a, later arrivals admitted before a's last waiting request.
    let mut seen = Fenwick::new(ranks.0.len());
    let mut discordant = 0;
    for &(from, to) in groups.iter().rev() {
        for w in &by_arrival[from..to] {
            discordant += seen.prefix(ranks.below(w.lo));
        }
        for hi in by_arrival[from..to].iter().filter_map(|w| w.hi) {
            seen.add(ranks.below(hi));
        }
    }
    Pairs { compared: pairs_of(n) - tied, concordant, discordant }
}

/// Visitors admitted at once (no ticket) while someone who had arrived before them was
/// still waiting: usher admits newcomers directly only when nobody waits.
///
/// `queued`: (ticket answer received, last waiting request sent) per waiter;
/// `direct`: (join sent, admitting answer received) per direct admission. A pair counts when
/// the waiter held its ticket before the newcomer's join was sent, and the newcomer was
/// admitted before the waiter's last waiting request was sent.
pub fn direct_overtakes(queued: &[(u64, u64)], direct: &[(u64, u64)]) -> u64 {
    let mut queued = queued.to_vec();
    queued.sort_unstable_by_key(|q| std::cmp::Reverse(q.0));
    let mut direct = direct.to_vec();
    direct.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
    let ranks = Ranks::new(direct.iter().map(|d| d.1).collect());
    let mut seen = Fenwick::new(ranks.0.len());
    let mut next = 0;
    let mut count = 0;
    for &(ticketed, lo) in &queued {
        while next < direct.len() && direct[next].0 > ticketed {
            seen.add(ranks.below(direct[next].1));
            next += 1;
        }
        count += seen.prefix(ranks.below(lo));
    }
    count
}

/// Kendall's tau-b between `x` and `y` of the pairs (ties handled), by Knight's algorithm:
/// sort by (x, y), count the inversions of y with a merge sort.
pub fn kendall_tau_b(points: &[(u64, u64)]) -> f64 {
    let n = points.len() as u64;
    if n < 2 {
        return 1.0;
    }
    let mut sorted = points.to_vec();
    sorted.sort_unstable();
    let tied_x: u64 = runs(&sorted, |a, b| a.0 == b.0);
    let tied_xy: u64 = runs(&sorted, |a, b| a == b);
    let mut ys: Vec<u64> = sorted.iter().map(|p| p.1).collect();
    let discordant = inversions(&mut ys);
    let tied_y: u64 = runs(&ys, |a, b| a == b);
    let n0 = pairs_of(n);
    let numerator = n0 as f64 - tied_x as f64 - tied_y as f64 + tied_xy as f64 - 2.0 * discordant as f64;
    let denominator = ((n0 - tied_x) as f64 * (n0 - tied_y) as f64).sqrt();
    if denominator == 0.0 { 1.0 } else { numerator / denominator }
}

fn pairs_of(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Pairs inside runs of equal neighbours in a sorted slice.
fn runs<T>(sorted: &[T], same: impl Fn(&T, &T) -> bool) -> u64 {
    let mut total = 0;
    let mut start = 0;
    for i in 1..=sorted.len() {
        if i == sorted.len() || !same(&sorted[i - 1], &sorted[i]) {
            total += pairs_of((i - start) as u64);
            start = i;
        }
    }
    total
}

/// `[from, to)` of each run of equal arrival keys in a slice sorted by them.
fn group_bounds(sorted: &[Waiter]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.len() {
        if i == sorted.len() || sorted[i - 1].arrival != sorted[i].arrival {
            out.push((start, i));
            start = i;
        }
    }
    out
}

/// Sorts `v` and returns the number of pairs `i < j` with `v[i] > v[j]` (merge sort).
fn inversions(v: &mut [u64]) -> u64 {
    let mut buffer = v.to_vec();
    merge_count(v, &mut buffer)
}

fn merge_count(v: &mut [u64], buffer: &mut [u64]) -> u64 {
    let n = v.len();
    if n < 2 {
        return 0;
    }
    let mid = n / 2;
    let mut count = {
        let (left, right) = v.split_at_mut(mid);
        let (bl, br) = buffer.split_at_mut(mid);
        merge_count(left, bl) + merge_count(right, br)
    };
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < mid && j < n {
        if v[i] <= v[j] {
            buffer[k] = v[i];
            i += 1;
        } else {
            buffer[k] = v[j];
            count += (mid - i) as u64;
            j += 1;
        }
        k += 1;
    }
    buffer[k..k + mid - i].copy_from_slice(&v[i..mid]);
    k += mid - i;
    buffer[k..k + n - j].copy_from_slice(&v[j..n]);
    v.copy_from_slice(&buffer[..n]);
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn brute_pairs(w: &[Waiter]) -> Pairs {
        let mut p = Pairs::default();
        for a in w {
            for b in w {
                if a.arrival < b.arrival {
                    p.compared += 1;
                    if a.hi.is_some_and(|hi| hi < b.lo) {
                        p.concordant += 1;
                    }
                    if b.hi.is_some_and(|hi| hi < a.lo) {
                        p.discordant += 1;
                    }
                }
            }
        }
        p
    }

    fn random_waiters(rng: &mut Rng, n: usize) -> Vec<Waiter> {
        (0..n)
            .map(|_| {
                let lo = rng.next_u64() % 1000;
                let hi = (rng.unit() < 0.9).then(|| lo + 1 + rng.next_u64() % 100);
                Waiter { arrival: rng.next_u64() % (n as u64 / 2 + 1), lo, hi }
            })
            .collect()
    }

    #[test]
    fn observed_order_matches_the_brute_force_count() {
        let mut rng = Rng::new(1);
        for n in [0, 1, 2, 10, 200] {
            let w = random_waiters(&mut rng, n);
            assert_eq!(observed_order(&w), brute_pairs(&w), "n = {n}");
        }
    }

    #[test]
    fn a_fifo_line_polled_coarsely_has_tau_one_and_an_overtake_is_counted() {
        // Grants every 10 units in arrival order; each visitor's interval spans 25 units.
        let mut w: Vec<Waiter> =
            (0..100u64).map(|i| Waiter { arrival: i, lo: i * 10, hi: Some(i * 10 + 25) }).collect();
        let fair = observed_order(&w);
        assert_eq!((fair.discordant, fair.tau()), (0, 1.0));
        assert!(fair.resolved_share() > 0.9 && fair.resolved_share() < 1.0, "close grants are not ordered");
        // Visitor 2 is let in by 8, while visitor 1 was still waiting at 10.
        w[2] = Waiter { arrival: 2, lo: 0, hi: Some(8) };
        let unfair = observed_order(&w);
        assert_eq!(unfair.discordant, 1);
        assert!(unfair.tau() < 1.0);
    }

    #[test]
    fn prequeued_visitors_sharing_a_key_are_not_compared() {
        let w = [
            Waiter { arrival: 0, lo: 50, hi: Some(60) },
            Waiter { arrival: 0, lo: 0, hi: Some(10) },
            Waiter { arrival: 5, lo: 70, hi: Some(80) },
        ];
        let p = observed_order(&w);
        assert_eq!((p.compared, p.concordant, p.discordant), (2, 2, 0));
    }

    #[test]
    fn direct_overtakes_match_the_brute_force_count() {
        let mut rng = Rng::new(9);
        let queued: Vec<(u64, u64)> = (0..300)
            .map(|_| {
                let t = rng.next_u64() % 1000;
                (t, t + rng.next_u64() % 200)
            })
            .collect();
        let direct: Vec<(u64, u64)> = (0..300)
            .map(|_| {
                let s = rng.next_u64() % 1000;
                (s, s + 1 + rng.next_u64() % 20)
            })
            .collect();
        let brute: u64 = queued.iter().map(|q| direct.iter().filter(|d| d.0 > q.0 && d.1 < q.1).count() as u64).sum();
        assert_eq!(direct_overtakes(&queued, &direct), brute);
        assert!(brute > 0, "the sample should contain some");
    }

    #[test]
    fn kendall_tau_b_matches_known_values() {
        let same: Vec<(u64, u64)> = (0..1000).map(|i| (i, i)).collect();
        assert_eq!(kendall_tau_b(&same), 1.0);
        let reversed: Vec<(u64, u64)> = (0..1000).map(|i| (i, 1000 - i)).collect();
        assert_eq!(kendall_tau_b(&reversed), -1.0);
        // One adjacent swap among 4: C = 5, D = 1, tau = 4/6.
        let swapped = [(1, 1), (2, 3), (3, 2), (4, 4)];
        assert!((kendall_tau_b(&swapped) - 4.0 / 6.0).abs() < 1e-12);
        // With ties (scipy.stats.kendalltau([1,2,2,3],[1,3,2,3]) = 0.8).
        let tied = [(1, 1), (2, 3), (2, 2), (3, 3)];
        assert!((kendall_tau_b(&tied) - 0.8).abs() < 1e-12, "{}", kendall_tau_b(&tied));
    }

    #[test]
    fn merge_sort_counts_inversions() {
        let mut rng = Rng::new(3);
        let v: Vec<u64> = (0..500).map(|_| rng.next_u64() % 50).collect();
        let brute =
            (0..v.len()).flat_map(|i| (i + 1..v.len()).map(move |j| (i, j))).filter(|&(i, j)| v[i] > v[j]).count();
        let mut w = v.clone();
        assert_eq!(inversions(&mut w), brute as u64);
        assert!(w.windows(2).all(|p| p[0] <= p[1]));
    }
}
