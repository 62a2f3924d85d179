//! Token sampling from raw logits, done in Rust so that it is the same whatever else shares the
//! batch: a sequence's seed alone decides its draws. Greedy (temperature 0) takes the arg-max.
//! The logprob reported for each token is its log-probability under the model's raw
//! distribution (temperature 1, no truncation), which is what RL trainers recompute.

/// Sampling settings of one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerParams {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
}

/// SplitMix64, seeded per sequence.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `log(sum(exp(logits)))`, computed stably.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| ((l as f64) - max).exp()).sum();
    max + sum.ln()
}

fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        // Strictly greater: ties go to the lowest id, as llama.cpp's greedy sampler does.
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Picks the next token from `logits`; returns it with its raw log-probability.
pub fn sample(logits: &[f32], p: &SamplerParams, rng: &mut Rng) -> (u32, f32) {
    let lse = log_sum_exp(logits);
    let token = if p.temperature <= 0.0 {
        argmax(logits)
    } else {
        draw(logits, p, rng)
    };
    (token as u32, (logits[token] as f64 - lse) as f32)
}

fn draw(logits: &[f32], p: &SamplerParams, rng: &mut Rng) -> usize {
    let mut cands: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    let truncated = p.top_k > 0 && p.top_k < cands.len();
    if truncated {
        cands.select_nth_unstable_by(p.top_k - 1, |a, b| b.1.total_cmp(&a.1));
        cands.truncate(p.top_k);
    }
    let t = p.temperature as f64;
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = cands
        .iter()
        .map(|&(i, l)| (i, ((l as f64 - max) / t).exp()))
        .collect();
    if p.min_p > 0.0 {
        // The largest weight is exp(0) = 1, so the threshold is min_p itself.
        let floor = p.min_p as f64;
        probs.retain(|c| c.1 >= floor);
    }
    if p.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = probs.iter().map(|c| c.1).sum();
        let mut cumulative = 0.0;
        let mut keep = 0;
        for c in &probs {
            cumulative += c.1 / total;
            keep += 1;
            if cumulative >= p.top_p as f64 {
                break;
            }
        }
        probs.truncate(keep.max(1));
    } else if truncated {
        // A fixed order, so that the draw depends only on the seed (without top-k the
        // candidates are already in token order).
        probs.sort_unstable_by_key(|c| c.0);
    }
    let total: f64 = probs.iter().map(|c| c.1).sum();
    let mut u = rng.unit() * total;
    for &(i, w) in &probs {
        if u < w {
            return i;
        }
        u -= w;
    }
    probs.last().map_or(0, |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplerParams {
        SamplerParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
        }
    }

    #[test]
    fn greedy_takes_the_argmax_and_reports_its_logprob() {
        let logits = [1.0, 3.0, 2.0];
        let (tok, lp) = sample(&logits, &params(0.0), &mut Rng::new(1));
        assert_eq!(tok, 1);
        let expected = 3.0 - (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert!((lp as f64 - expected).abs() < 1e-6);
    }

    #[test]
    fn a_seed_makes_draws_reproducible() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| sample(&logits, &params(1.0), &mut rng).0)
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.5, 2.0, 1.9, -1.0];
        let mut rng = Rng::new(3);
        for _ in 0..20 {
            let k1 = SamplerParams {
                top_k: 1,
                ..params(1.5)
            };
            assert_eq!(sample(&logits, &k1, &mut rng).0, 1);
            let p0 = SamplerParams {
                top_p: 0.01,
                ..params(1.5)
            };
            assert_eq!(sample(&logits, &p0, &mut rng).0, 1);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits = [10.0, 9.5, 0.0, 0.0, 0.0];
        let mut rng = Rng::new(5);
        let p = SamplerParams {
            min_p: 0.1,
            ..params(1.0)
        };
        for _ in 0..200 {
            assert!(sample(&logits, &p, &mut rng).0 < 2);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two tokens with probabilities 0.75 / 0.25 at temperature 1.
        let logits = [3f32.ln(), 0.0];
        let mut rng = Rng::new(11);
        let n = 20_000;
        let zeros = (0..n)
            .filter(|_| sample(&logits, &params(1.0), &mut rng).0 == 0)
            .count();
        let share = zeros as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }
}
