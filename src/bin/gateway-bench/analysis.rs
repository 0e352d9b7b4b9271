//! The arithmetic of the RSS and soak sections: steady-state RSS from a series of samples, the
//! least-squares line RSS = intercept + slope × items, and the first-vs-last comparison of a soak.
//! Pure functions, unit-tested below.

/// RSS samples of one run: (seconds since the window started, VmRSS MiB).
pub type Series = [(f64, f64)];

/// Mean RSS of the last `last` samples (the steady state at the end of a settle window).
pub fn steady_mean(series: &Series, last: usize) -> Option<f64> {
    let tail = &series[series.len().saturating_sub(last.max(1))..];
    mean(tail.iter().map(|s| s.1))
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// A least-squares line through (items, RSS MiB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearFit {
    /// RSS at zero items, MiB.
    pub intercept_mib: f64,
    /// MiB per 1,000 items.
    pub slope_mib_per_k: f64,
    /// Largest |measured − fitted| relative to the measured value.
    pub max_rel_residual: f64,
    /// Points the line was fitted through.
    pub points: usize,
}

impl LinearFit {
    /// The line explains the points: every residual below 5 % of its value, with at least three
    /// points (a line through two always fits, which says nothing).
    pub fn is_linear(&self) -> bool {
        self.points >= 3 && self.max_rel_residual < LINEAR_TOLERANCE
    }
}

/// Largest relative residual still called "linear".
pub const LINEAR_TOLERANCE: f64 = 0.05;

/// Least squares of `points` (items, MiB); `None` with fewer than two distinct item counts.
pub fn fit(points: &[(f64, f64)]) -> Option<LinearFit> {
    let n = points.len() as f64;
    let mx = mean(points.iter().map(|p| p.0))?;
    let my = mean(points.iter().map(|p| p.1))?;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if n < 2.0 || sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let max_rel_residual = points
        .iter()
        .map(|&(x, y)| ((y - (intercept + slope * x)) / y).abs())
        .fold(0.0, f64::max);
    Some(LinearFit {
        intercept_mib: intercept,
        slope_mib_per_k: slope * 1000.0,
        max_rel_residual,
        points: points.len(),
    })
}

/// First vs last part of a soak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoakComparison {
    /// Seconds each part spans (five minutes, less in a run shorter than ten).
    pub span_s: f64,
    /// Mean RSS of the first part, MiB.
    pub first_mib: f64,
    /// Mean RSS of the last part, MiB.
    pub last_mib: f64,
}

impl SoakComparison {
    /// (last − first) / first, %.
    pub fn diff_pct(&self) -> f64 {
        100.0 * (self.last_mib - self.first_mib) / self.first_mib
    }
    /// Flat: the last part within ±5 % of the first.
    pub fn flat(&self) -> bool {
        self.diff_pct().abs() <= 100.0 * SOAK_TOLERANCE
    }
}

/// Largest relative change of RSS a soak may show and still count as flat.
pub const SOAK_TOLERANCE: f64 = 0.05;

/// Compares the samples of the first `span_s` seconds of the window with those of its last
/// `span_s` seconds; the span shrinks to half the run when the run is shorter than two spans
/// (the parts never overlap). `None` when a part has no sample.
pub fn compare_soak(series: &Series, span_s: f64) -> Option<SoakComparison> {
    let end = series.last()?.0;
    let span = span_s.min(end / 2.0);
    let first = mean(series.iter().filter(|s| s.0 < span).map(|s| s.1))?;
    let last = mean(series.iter().filter(|s| s.0 > end - span).map(|s| s.1))?;
    Some(SoakComparison {
        span_s: span,
        first_mib: first,
        last_mib: last,
    })
}

/// The series as CSV: `seconds,rss_mib` per sample.
pub fn series_csv(series: &Series) -> String {
    let mut out = String::from("seconds,rss_mib\n");
    for (t, rss) in series {
        out.push_str(&format!("{t:.1},{rss:.2}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_mean_averages_the_tail() {
        let s = [(0.0, 100.0), (1.0, 50.0), (2.0, 60.0), (3.0, 70.0)];
        assert_eq!(steady_mean(&s, 3), Some(60.0));
        assert_eq!(steady_mean(&s, 10), Some(70.0));
        assert_eq!(steady_mean(&[], 3), None);
    }

    #[test]
    fn fit_recovers_a_line_and_flags_a_curve() {
        // 40 MiB + 1.2 MiB per 1,000 items.
        let pts: Vec<_> = [10_000.0, 50_000.0, 100_000.0, 200_000.0]
            .iter()
            .map(|&x| (x, 40.0 + 0.0012 * x))
            .collect();
        let f = fit(&pts).unwrap();
        assert!((f.intercept_mib - 40.0).abs() < 1e-9, "{f:?}");
        assert!((f.slope_mib_per_k - 1.2).abs() < 1e-9, "{f:?}");
        assert!(f.max_rel_residual < 1e-9 && f.is_linear(), "{f:?}");
        // Quadratic growth: the line misses the small counts by far more than 5 %.
        let curve: Vec<_> = [10_000.0, 50_000.0, 100_000.0, 200_000.0]
            .iter()
            .map(|&x: &f64| (x, 20.0 + (x / 1000.0).powi(2) / 100.0))
            .collect();
        let f = fit(&curve).unwrap();
        assert!(!f.is_linear(), "{f:?}");
        // Hand-computed: (0, 1), (1, 3), (2, 2): slope 0.5, intercept 1.5, residuals ±0.5/1.
        let f = fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)]).unwrap();
        assert!((f.slope_mib_per_k - 500.0).abs() < 1e-9 && (f.intercept_mib - 1.5).abs() < 1e-9);
        assert!((f.max_rel_residual - 0.5).abs() < 1e-9, "{f:?}");
        assert_eq!(fit(&[(1.0, 1.0)]), None);
        // Two points: the line meets both, which proves nothing.
        let two = fit(&[(1.0, 1.0), (2.0, 5.0)]).unwrap();
        assert!(two.max_rel_residual < 1e-12 && !two.is_linear(), "{two:?}");
        assert_eq!(fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }

    #[test]
    fn soak_compares_first_and_last_five_minutes() {
        // 30 minutes every 5 s: 100 MiB, growing by 0.01 MiB per sample after 10 minutes.
        let s: Vec<_> = (0..=360)
            .map(|i| {
                let t = i as f64 * 5.0;
                (t, 100.0 + if t > 600.0 { (t - 600.0) / 500.0 } else { 0.0 })
            })
            .collect();
        let c = compare_soak(&s, 300.0).unwrap();
        assert_eq!(c.span_s, 300.0);
        assert_eq!(c.first_mib, 100.0);
        // The last five minutes: samples after 1500 s, (t − 600)/500 from 1.81 to 2.4.
        assert!((c.last_mib - 102.105).abs() < 1e-9, "{c:?}");
        assert!(c.flat(), "{c:?}");
        // A leak of 10 %: not flat.
        let leak: Vec<_> = s.iter().map(|&(t, r)| (t, r + t / 150.0)).collect();
        let c = compare_soak(&leak, 300.0).unwrap();
        assert!(!c.flat() && c.diff_pct() > 5.0, "{c:?}");
        // A short run: halves, never overlapping.
        let short = [(0.0, 10.0), (5.0, 10.0), (10.0, 11.0), (15.0, 11.0)];
        let c = compare_soak(&short, 300.0).unwrap();
        assert_eq!((c.span_s, c.first_mib, c.last_mib), (7.5, 10.0, 11.0));
        assert!((c.diff_pct() - 10.0).abs() < 1e-9);
        assert_eq!(compare_soak(&[], 300.0), None);
        assert_eq!(series_csv(&short[..1]), "seconds,rss_mib\n0.0,10.00\n");
    }
}
