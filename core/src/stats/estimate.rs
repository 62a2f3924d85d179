//! The estimators behind the metrics: pass@k and pass^k, the Wilson interval of a rate, the
//! t interval of a mean, and `unsigned_zero` for numbers printed without a sign on zero.

/// `n choose k` as a float, exact enough for the ratios below.
fn ratio_of_binomials(top_n: u64, n: u64, k: u64) -> f64 {
    // C(top_n, k) / C(n, k) = prod_{i=0}^{k-1} (top_n - i) / (n - i)
    if k > top_n {
        return 0.0;
    }
    (0..k)
        .map(|i| (top_n - i) as f64 / (n - i) as f64)
        .product()
}

/// The unbiased pass@k estimator of the Codex paper: `1 - C(n-c, k) / C(n, k)`.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> f64 {
    assert!(
        k >= 1 && k <= n && c <= n,
        "pass@k needs 1 <= k <= n and c <= n"
    );
    1.0 - ratio_of_binomials(n - c, n, k)
}

/// tau-bench's pass^k: the chance that k samples drawn without replacement all succeed,
/// `C(c, k) / C(n, k)`.
pub fn pass_hat_k(n: u64, c: u64, k: u64) -> f64 {
    assert!(
        k >= 1 && k <= n && c <= n,
        "pass^k needs 1 <= k <= n and c <= n"
    );
    ratio_of_binomials(c, n, k)
}

/// Wilson score interval for a proportion at 95%.
pub fn wilson_interval(successes: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let z = 1.959_964;
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * ((p * (1.0 - p) / n_f) + z * z / (4.0 * n_f * n_f)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Two-sided 95% Student t critical value for `df` degrees of freedom.
pub(super) fn t_critical(df: u64) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    match StudentsT::new(0.0, 1.0, df as f64) {
        Ok(t) => t.inverse_cdf(0.975),
        Err(_) => f64::NAN,
    }
}

/// Mean with a 95% t interval, kept inside the range the values span: a mean of values within
/// `[lo, hi]` lies within it, so an interval reaching past it (as the t interval does for a
/// few values near a bound) is cut there.
pub fn mean_interval(values: &[f64]) -> (f64, (f64, f64)) {
    let n = values.len();
    if n == 0 {
        return (0.0, (0.0, 0.0));
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, (mean, mean));
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_critical(n as u64 - 1) * (var / n as f64).sqrt();
    (mean, ((mean - half).max(lo), (mean + half).min(hi)))
}

/// A number without a sign on zero: `-0.0` reads as a negative result that is not there.
pub fn unsigned_zero(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}
