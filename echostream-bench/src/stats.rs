//! Percentiles over latency samples.

/// Latency samples in nanoseconds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples(pub(crate) Vec<u64>);

impl Samples {
    /// The `p` quantile (0..=1) in microseconds; `None` without samples.
    pub(crate) fn pct_us(&mut self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let n = self.0.len();
        let idx = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        Some(self.0[idx] as f64 / 1e3)
    }
}

/// Nanoseconds of a duration, saturating.
pub(crate) fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
