//! Calibration queries drawn like a workspace's rows (issue 36): what
//! `tenancy.calibrate_vector_index` searches to measure an index's recall.
//!
//! Calibration needs queries that land where the workspace's real queries land; it cannot have
//! them, only the workspace's rows. A row itself is no query: it is a node of the graph, whose
//! links lead straight to its nearest neighbours, so rows as queries overstated recall (an
//! isotropic cloud of 8,000 rows of 64 dimensions at `ef_search` 40: 0.976 with rows, 0.91 for new
//! points drawn like the data). The workspace's mean plus the difference of two random rows over
//! √2 is a new point with the rows' mean and covariance, exactly what a single cloud draws; but
//! a workspace of several topics is no single cloud, and such points fall between its topics,
//! where no query of a user lands and where a graph is hardest to search: a clustered 17,865-row
//! workspace measured 0.976 at `ef_search` 250 where queries drawn like its rows reached 1.000 at
//! 40, so `tenancy.nearest` scanned it exactly at 14× the index's time (docs/benchmarks.md).
//!
//! So the rows are first grouped, and only when the grouping is real: k-means on the rows is
//! compared, for each k of a short list, with k-means on as many single-cloud points made from
//! the same rows (mean + difference over √2, the same mean and covariance, no topics). The gap
//! ln(reference's squared error) − ln(rows' squared error) is about 0 when the rows are one
//! cloud of any shape, and large when they form topics. Below `GAP_MIN` nothing is grouped and
//! every query is a single-cloud point as before; above it, the smallest k whose gap is within
//! `GAP_SHARE` of the largest (fewer, wider groups: harder queries, never easier) groups the rows,
//! and each query is a group's mean plus the difference of two rows of that group over √2, the
//! group drawn by its size. Pure computation: no database, no I/O.

/// The k tried, smallest first; a k is tried only when the sample has `MIN_PER_GROUP` rows per
/// group on average.
const KS: [usize; 9] = [2, 3, 4, 6, 8, 12, 16, 24, 32];
const MIN_PER_GROUP: usize = 8;
/// The gap below which the rows count as one cloud. Measured on single Gaussian clouds of 64
/// dimensions (60 to 1,000 rows; isotropic, and with one axis 3× and 6× the others): every gap
/// ≤ 0.01; on 9 topics whose centres lie 0.6 apart against a spread of 0.3 (as
/// `scripts/bench-recall` draws them): 0.86–0.95 at k = 12; at a quarter of that separation, where
/// topics overlap into one cloud, 0.07 at most, and nothing is grouped.
const GAP_MIN: f64 = 0.15;
/// The share of the largest gap a smaller k must reach to be taken.
const GAP_SHARE: f64 = 0.9;
/// Clustering runs on at most this many dimensions: longer rows are projected on as many random
/// directions first (distances kept within a few per cent), so that 1,000 rows of 1,536
/// dimensions group in milliseconds. Queries are made from the rows themselves.
const PROJECTED_DIMS: usize = 64;
/// Lloyd iterations per k-means run, and runs per k (the lowest error kept).
const ITERATIONS: usize = 25;
const RUNS: usize = 2;

/// A small deterministic generator (splitmix64): the sample arrives in random order already, and
/// the same sample gives the same queries.
struct Rng(u64);

impl Rng {
    /// The next 64 random bits.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A uniform value in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal value (Box–Muller).
    fn gauss(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// Rows of `dims` values, one after another.
struct Points<'a> {
    values: &'a [f64],
    dims: usize,
}

impl Points<'_> {
    /// How many rows.
    fn len(&self) -> usize {
        self.values.len() / self.dims
    }

    /// Row `i`.
    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dims..(i + 1) * self.dims]
    }
}

/// Squared Euclidean distance.
fn distance2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The mean of the rows `members`.
fn mean(points: &Points, members: &[usize]) -> Vec<f64> {
    let mut sum = vec![0.0; points.dims];
    for &i in members {
        for (s, x) in sum.iter_mut().zip(points.row(i)) {
            *s += x;
        }
    }
    let n = members.len().max(1) as f64;
    sum.iter().map(|s| s / n).collect()
}

/// k-means (k-means++ seeding, Lloyd iterations): each row's group and the summed squared
/// distance to the group means, the lowest of `RUNS` runs.
fn k_means(points: &Points, k: usize, rng: &mut Rng) -> (Vec<usize>, f64) {
    let mut best: Option<(Vec<usize>, f64)> = None;
    for _ in 0..RUNS {
        let run = k_means_once(points, k, rng);
        if best.as_ref().is_none_or(|(_, error)| run.1 < *error) {
            best = Some(run);
        }
    }
    best.unwrap_or_default()
}

/// One k-means run.
fn k_means_once(points: &Points, k: usize, rng: &mut Rng) -> (Vec<usize>, f64) {
    let n = points.len();
    let mut centres: Vec<Vec<f64>> = vec![points.row(rng.below(n)).to_vec()];
    let mut nearest: Vec<f64> = (0..n).map(|i| distance2(points.row(i), &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().sum();
        let mut pick = rng.unit() * total;
        let mut chosen = n - 1;
        for (i, d) in nearest.iter().enumerate() {
            if pick < *d {
                chosen = i;
                break;
            }
            pick -= d;
        }
        centres.push(points.row(chosen).to_vec());
        let centre = centres.last().cloned().unwrap_or_default();
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(distance2(points.row(i), &centre));
        }
    }
    let mut group = vec![0; n];
    let mut error = 0.0;
    for iteration in 0..ITERATIONS {
        let mut changed = false;
        error = 0.0;
        for (i, g) in group.iter_mut().enumerate() {
            let (best, d) = centres
                .iter()
                .enumerate()
                .map(|(c, centre)| (c, distance2(points.row(i), centre)))
                .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
            changed |= *g != best;
            *g = best;
            error += d;
        }
        if !changed && iteration > 0 {
            break;
        }
        let mut sums = vec![vec![0.0; points.dims]; k];
        let mut counts = vec![0usize; k];
        for (i, &g) in group.iter().enumerate() {
            counts[g] += 1;
            for (s, x) in sums[g].iter_mut().zip(points.row(i)) {
                *s += x;
            }
        }
        for c in 0..k {
            if counts[c] == 0 {
                // An empty group restarts on a random row.
                centres[c] = points.row(rng.below(n)).to_vec();
            } else {
                centres[c] = sums[c].iter().map(|s| s / counts[c] as f64).collect();
            }
        }
    }
    (group, error)
}

/// `count` points with the rows' mean and covariance: mean + (a − b)/√2 for random distinct rows.
fn single_cloud_points(points: &Points, members: &[usize], centre: &[f64], count: usize, rng: &mut Rng) -> Vec<f64> {
    let mut out = Vec::with_capacity(count * points.dims);
    for _ in 0..count {
        let a = members[rng.below(members.len())];
        let mut b = members[rng.below(members.len())];
        if members.len() > 1 {
            while b == a {
                b = members[rng.below(members.len())];
            }
        }
        for ((c, x), y) in centre.iter().zip(points.row(a)).zip(points.row(b)) {
            out.push(c + (x - y) / std::f64::consts::SQRT_2);
        }
    }
    out
}

/// The rows projected on `PROJECTED_DIMS` random directions when they are longer.
fn projected(points: &Points, rng: &mut Rng) -> Vec<f64> {
    if points.dims <= PROJECTED_DIMS {
        return points.values.to_vec();
    }
    let scale = 1.0 / (PROJECTED_DIMS as f64).sqrt();
    let directions: Vec<f64> = (0..PROJECTED_DIMS * points.dims).map(|_| rng.gauss() * scale).collect();
    let mut out = Vec::with_capacity(points.len() * PROJECTED_DIMS);
    for i in 0..points.len() {
        let row = points.row(i);
        for d in 0..PROJECTED_DIMS {
            let direction = &directions[d * points.dims..(d + 1) * points.dims];
            out.push(row.iter().zip(direction).map(|(x, y)| x * y).sum());
        }
    }
    out
}

/// How the rows group: each row's group (all 0 when they are one cloud), and the gaps measured
/// for each k tried (for tests and reports).
pub fn grouping(values: &[f64], dims: usize) -> (Vec<usize>, Vec<(usize, f64)>) {
    let points = Points { values, dims };
    let n = points.len();
    let mut rng = Rng(0x0074_656e_616e_6379);
    let flat = projected(&points, &mut rng);
    let small = Points {
        values: &flat,
        dims: dims.min(PROJECTED_DIMS),
    };
    let all: Vec<usize> = (0..n).collect();
    let reference_values = single_cloud_points(&small, &all, &mean(&small, &all), n, &mut rng);
    let reference = Points {
        values: &reference_values,
        dims: small.dims,
    };
    let mut gaps = Vec::new();
    let mut groupings = Vec::new();
    for &k in KS.iter().filter(|&&k| k * MIN_PER_GROUP <= n) {
        let (group, error) = k_means(&small, k, &mut rng);
        let (_, reference_error) = k_means(&reference, k, &mut rng);
        let gap = if error > 0.0 && reference_error > 0.0 {
            (reference_error / error).ln()
        } else {
            0.0
        };
        gaps.push((k, gap));
        groupings.push(group);
    }
    let largest = gaps.iter().map(|(_, g)| *g).fold(f64::NEG_INFINITY, f64::max);
    if largest < GAP_MIN {
        return (vec![0; n], gaps);
    }
    let chosen = gaps.iter().position(|(_, g)| *g >= GAP_SHARE * largest).unwrap_or(0);
    (groupings.swap_remove(chosen), gaps)
}

/// `count` calibration queries for rows of `dims` values (see the module's comment), each of
/// `dims` values, one after another. Fewer than two rows give none.
pub fn queries(values: &[f64], dims: usize, count: usize) -> Vec<f64> {
    if dims == 0 || values.len() < 2 * dims {
        return Vec::new();
    }
    let points = Points { values, dims };
    let (group, _) = grouping(values, dims);
    let groups = group.iter().max().map_or(1, |g| g + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for (i, &g) in group.iter().enumerate() {
        members[g].push(i);
    }
    let centres: Vec<Vec<f64>> = members.iter().map(|m| mean(&points, m)).collect();
    let all: Vec<usize> = (0..points.len()).collect();
    let everything = mean(&points, &all);
    let mut rng = Rng(0x0063_616c_6962_7261);
    let mut out = Vec::with_capacity(count * dims);
    for _ in 0..count {
        // A group drawn by its size; a group of one row has no difference to add: the whole
        // sample's cloud instead (wider, never easier).
        let g = group[rng.below(points.len())];
        if members[g].len() >= 2 {
            out.extend(single_cloud_points(&points, &members[g], &centres[g], 1, &mut rng));
        } else {
            out.extend(single_cloud_points(&points, &all, &everything, 1, &mut rng));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows drawn from `topics` Gaussian topics (offset `offset` between their centres, spread
    /// `spread` within), or one cloud when `topics` is 1, with axis 0 stretched by `stretch`.
    fn rows(n: usize, dims: usize, topics: usize, offset: f64, spread: f64, stretch: f64, seed: u64) -> Vec<f64> {
        let mut rng = Rng(seed);
        let base: Vec<f64> = (0..dims).map(|_| rng.gauss() / (dims as f64).sqrt()).collect();
        let centres: Vec<Vec<f64>> = (0..topics)
            .map(|_| {
                base.iter()
                    .map(|b| b + rng.gauss() * offset / (dims as f64).sqrt())
                    .collect()
            })
            .collect();
        let mut out = Vec::new();
        for _ in 0..n {
            let c = &centres[rng.below(topics)];
            for (d, x) in c.iter().enumerate() {
                let s = if d == 0 { spread * stretch } else { spread };
                out.push(x + rng.gauss() * s / (dims as f64).sqrt());
            }
        }
        out
    }

    #[test]
    fn one_cloud_of_any_shape_is_not_grouped() {
        for (n, stretch, seed) in [
            (1000, 1.0, 1),
            (1000, 3.0, 2),
            (300, 1.0, 3),
            (100, 1.0, 4),
            (1000, 1.0, 5),
        ] {
            let values = rows(n, 64, 1, 0.0, 0.35, stretch, seed);
            let (group, gaps) = grouping(&values, 64);
            assert!(
                group.iter().all(|g| *g == 0),
                "n {n} stretch {stretch}: grouped, gaps {gaps:?}"
            );
        }
    }

    #[test]
    fn topics_are_grouped_and_queries_land_on_them() {
        for (topics, seed) in [(4, 11), (9, 12), (16, 13)] {
            let values = rows(1000, 64, topics, 0.6, 0.3, 1.0, seed);
            let (group, gaps) = grouping(&values, 64);
            let groups = group.iter().max().unwrap() + 1;
            assert!(groups >= topics / 2, "{topics} topics: {groups} groups, gaps {gaps:?}");
            // Queries sit as far from the nearest row as rows sit from each other, not between
            // topics: mean distance to the nearest row within 1.5× the rows' own.
            let points = Points {
                values: &values,
                dims: 64,
            };
            let nearest_row = |q: &[f64], skip: Option<usize>| {
                (0..points.len())
                    .filter(|i| Some(*i) != skip)
                    .map(|i| distance2(q, points.row(i)))
                    .fold(f64::INFINITY, f64::min)
                    .sqrt()
            };
            let own: f64 = (0..100).map(|i| nearest_row(points.row(i), Some(i))).sum::<f64>() / 100.0;
            let q = queries(&values, 64, 100);
            let theirs: f64 = q.chunks(64).map(|r| nearest_row(r, None)).sum::<f64>() / 100.0;
            assert!(
                theirs < 1.5 * own,
                "{topics} topics: queries {theirs:.3} from rows, rows {own:.3}"
            );
        }
    }

    #[test]
    fn queries_of_one_cloud_spread_like_its_rows() {
        let values = rows(1000, 64, 1, 0.0, 0.35, 1.0, 21);
        let points = Points {
            values: &values,
            dims: 64,
        };
        let centre = mean(&points, &(0..points.len()).collect::<Vec<_>>());
        let spread =
            |v: &[f64]| v.chunks(64).map(|r| distance2(r, &centre).sqrt()).sum::<f64>() / (v.len() / 64) as f64;
        let q = queries(&values, 64, 200);
        let (rows_spread, queries_spread) = (spread(&values), spread(&q));
        assert!(
            (queries_spread / rows_spread - 1.0).abs() < 0.05,
            "rows {rows_spread:.4}, queries {queries_spread:.4}"
        );
    }

    #[test]
    fn long_rows_are_grouped_through_a_projection() {
        let values = rows(400, 768, 6, 0.6, 0.3, 1.0, 31);
        let (group, gaps) = grouping(&values, 768);
        assert!(group.iter().max().unwrap() + 1 >= 3, "gaps {gaps:?}");
        assert_eq!(queries(&values, 768, 10).len(), 10 * 768);
    }

    #[test]
    fn too_few_rows_give_no_queries() {
        assert!(queries(&[1.0, 2.0], 2, 5).is_empty());
        assert!(queries(&[], 0, 5).is_empty());
        assert_eq!(queries(&[1.0, 2.0, 3.0, 4.0], 2, 5).len(), 10);
    }
}
