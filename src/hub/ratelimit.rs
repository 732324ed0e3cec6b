//! A token bucket per connection: `rate` frames a second, bursts of `burst`.

use std::time::Instant;

/// Token bucket state.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When a token was last asked for.
    pub fn last(&self) -> Instant {
        self.last
    }

    /// Takes one token now.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(100, 200);
        b.last = start;
        let taken = (0..300).filter(|_| b.take_at(start)).count();
        assert_eq!(taken, 200);
        // 100 ms later: 10 more.
        let later = start + Duration::from_millis(100);
        let taken = (0..50).filter(|_| b.take_at(later)).count();
        assert_eq!(taken, 10);
    }
}
