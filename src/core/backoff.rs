//! Retry delays: exponential with jitter, from the `backon` crate.
//!
//! Jitter matters on a plant network: after a switch reboot every gateway (and every source
//! of one gateway) would otherwise retry in lock-step and hit the server at the same instants.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// First delay.
const MIN_DELAY: Duration = Duration::from_millis(500);
/// Largest delay before jitter; backon adds up to one more delay of jitter, so a retry waits
/// at most about 30 s.
const MAX_DELAY: Duration = Duration::from_secs(15);

/// Exponential backoff 0.5 s → ~30 s with jitter, never giving up (the caller decides when to
/// stop: shutdown, or an error that retrying cannot fix).
pub struct Backoff {
    delays: ExponentialBackoff,
}

impl Backoff {
    /// Starts at 0.5 s (plus jitter).
    pub fn new() -> Self {
        Backoff {
            delays: Self::builder().build(),
        }
    }

    fn builder() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }

    /// The next delay; roughly doubles each time up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        // Without max_times the iterator never ends; the fallback only guards that promise.
        self.delays.next().unwrap_or(MAX_DELAY)
    }

    /// Back to the first delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.delays = Self::builder().build();
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_within_bounds_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= MIN_DELAY && first <= MIN_DELAY * 2, "{first:?}");
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= MAX_DELAY * 2, "{last:?}");
        }
        assert!(last >= MAX_DELAY, "grew to the maximum: {last:?}");
        b.reset();
        assert!(b.next_delay() <= MIN_DELAY * 2);
        // Jitter: twenty fresh first delays are not all equal.
        let firsts: std::collections::HashSet<_> =
            (0..20).map(|_| Backoff::new().next_delay()).collect();
        assert!(firsts.len() > 1, "no jitter: {firsts:?}");
    }
}
