//! How long to wait before another try: exponential backoff with jitter, shared by every
//! request and every read that a bad link or a busy server can break.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The first wait; each retry doubles it, up to [`MAX_WAIT`].
pub const FIRST_WAIT: Duration = Duration::from_millis(250);
pub const MAX_WAIT: Duration = Duration::from_secs(8);

/// The wait before try `tries + 1`: doubling from [`FIRST_WAIT`], capped, and scattered over its
/// upper half so that clients failing together do not come back together.
pub fn backoff(tries: u32) -> Duration {
    let full = FIRST_WAIT
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(MAX_WAIT);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(tries);
    let jitter = (h.finish() % 1000) as f64 / 1000.0;
    full.mul_f64(0.5 + jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stays_in_its_upper_half() {
        for tries in 1..=8 {
            let full = FIRST_WAIT.saturating_mul(1 << (tries - 1)).min(MAX_WAIT);
            let wait = backoff(tries);
            assert!(wait >= full / 2 && wait <= full, "{tries}: {wait:?}");
        }
        assert!(backoff(40) <= MAX_WAIT);
    }
}
