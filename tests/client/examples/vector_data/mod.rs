//! What the vector benchmarks share (scripts/bench-search, scripts/bench-recall): a deterministic
//! generator, topics with a low-rank spread, Zipf-like workspace sizes, the size buckets, the
//! cosine distance and percentiles.

#![allow(dead_code)] // each benchmark uses a different part of it

/// splitmix64: a small deterministic generator (the data is the same on every run).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn gauss(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A topic: a centre plus a low-rank spread (embeddings have a low intrinsic dimension).
pub struct Topic {
    pub centre: Vec<f64>,
    pub basis: Vec<Vec<f64>>,
}
pub const RANK: usize = 8;
pub const SPREAD: f64 = 0.5; // norm of the low-rank part, relative to a centre of norm ~1
pub const NOISE: f64 = 0.03; // per-dimension isotropic noise (norm ~0.25 at 64 dimensions)

impl Topic {
    pub fn new(rng: &mut Rng, dims: usize, around: Option<&[f64]>, offset: f64) -> Topic {
        let centre = (0..dims)
            .map(|i| match around {
                Some(c) => c[i] + rng.gauss() * offset / (dims as f64).sqrt(),
                None => rng.gauss() / (dims as f64).sqrt(),
            })
            .collect();
        let scale = SPREAD / ((dims * RANK) as f64).sqrt();
        let basis = (0..RANK)
            .map(|_| (0..dims).map(|_| rng.gauss() * scale).collect())
            .collect();
        Topic { centre, basis }
    }
    pub fn sample(&self, rng: &mut Rng) -> Vec<f32> {
        let mut v = self.centre.clone();
        for b in &self.basis {
            let z = rng.gauss();
            for (x, bi) in v.iter_mut().zip(b) {
                *x += z * bi;
            }
        }
        v.iter().map(|x| (x + rng.gauss() * NOISE) as f32).collect()
    }
}

/// Workspace sizes: Zipf-like ranks (exponent 1.07) for 94% of the workspaces, then 4% tiny
/// (1..9 rows, fewer than k) and 2% empty; scaled to about `rows` in total.
pub fn sizes(workspaces: usize, rows: usize) -> Vec<usize> {
    zipf_sizes(workspaces, rows, 1.07)
}

/// `sizes` with another Zipf exponent (larger: a few workspaces hold more of the rows).
pub fn zipf_sizes(workspaces: usize, rows: usize, exponent: f64) -> Vec<usize> {
    let zipf = workspaces * 94 / 100;
    let tiny = workspaces * 4 / 100;
    let weights: Vec<f64> = (1..=zipf).map(|r| 1.0 / (r as f64).powf(exponent)).collect();
    let total: f64 = weights.iter().sum();
    let mut s: Vec<usize> = weights
        .iter()
        .map(|w| ((w / total) * rows as f64).max(10.0) as usize)
        .collect();
    s.extend((0..tiny).map(|i| 1 + i % 9));
    s.extend(std::iter::repeat_n(0, workspaces - zipf - tiny));
    s
}

pub fn bucket(n: usize) -> &'static str {
    match n {
        0 => "6 empty (0)",
        1..=9 => "5 tiny (1-9)",
        10..=99 => "4 small (10-99)",
        100..=999 => "3 medium (100-999)",
        1000..=9999 => "2 large (1k-10k)",
        _ => "1 whale (>=10k)",
    }
}

pub fn cosine(a: &[f32], b: &[f32], nb: f32) -> f32 {
    let (mut dot, mut na) = (0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
    }
    1.0 - dot / (na.sqrt() * nb)
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Exact top-`k` row ids (1-based: row index + 1) among `members` (row indexes into `vecs`) for
/// query `q`, by cosine distance.
pub fn truth(members: &[usize], vecs: &[Vec<f32>], q: &[f32], k: usize) -> Vec<i64> {
    let nq = q.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut d: Vec<(f32, usize)> = members.iter().map(|&i| (cosine(&vecs[i], q, nq), i)).collect();
    d.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    d.iter().take(k).map(|&(_, i)| i as i64 + 1).collect()
}

/// Loads rows into `table`'s (id, workspace_id, embedding) with COPY: row i + 1 of workspace
/// `ws_{ws_of[i]}` with vector `vecs[i]` (five decimals).
pub fn copy_rows(db: &mut postgres::Client, table: &str, ws_of: &[usize], vecs: &[Vec<f32>]) {
    use std::io::Write;
    let mut w = db
        .copy_in(&format!("COPY {table} (id, workspace_id, embedding) FROM STDIN"))
        .unwrap();
    for (i, v) in vecs.iter().enumerate() {
        let s: Vec<String> = v.iter().map(|x| format!("{x:.5}")).collect();
        writeln!(w, "{}\tws_{}\t[{}]", i + 1, ws_of[i], s.join(",")).unwrap();
    }
    w.finish().unwrap();
}
