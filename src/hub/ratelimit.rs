//! A token bucket per connection: `rate` frames a second, bursts of `burst`; and
//! [`FrameLimit`], the per-connection rule both front-ends apply with it.

use std::time::{Duration, Instant};

/// At most one `rate-limited` error per this interval, so a flood does not turn into a
/// flood of errors.
pub const RATE_ERROR_INTERVAL: Duration = Duration::from_secs(1);
/// A connection that keeps sending this many bursts' worth of frames in a row past its
/// rate limit is flooding, not bursting: it is closed.
pub const FLOOD_BURSTS: u32 = 4;

/// What [`FrameLimit::check`] says of one frame (a WebSocket frame, a socket.io event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Pass,
    /// Over it: refused; `tell` when the peer is due an error saying so.
    Refused {
        /// Whether to send the `rate-limited` error now.
        tell: bool,
    },
    /// Over it for [`FLOOD_BURSTS`] bursts in a row: close the connection. Said once.
    Flooding,
}

/// One connection's frame rate limit: the token bucket, the refusals in a row that make
/// a flood, and the pacing of the errors that say so.
#[derive(Debug, Clone)]
pub struct FrameLimit {
    bucket: TokenBucket,
    refused_in_a_row: u32,
    flood_after: u32,
    last_error: Option<Instant>,
}

impl FrameLimit {
    /// `rate_per_sec` frames a second, bursts of `burst`.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        FrameLimit {
            bucket: TokenBucket::new(rate_per_sec, burst),
            refused_in_a_row: 0,
            flood_after: burst.max(1).saturating_mul(FLOOD_BURSTS),
            last_error: None,
        }
    }

    /// Spends a token for a frame that arrived at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.take_at(now) {
            self.refused_in_a_row = 0;
            return Verdict::Pass;
        }
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.refused_in_a_row == self.flood_after {
            return Verdict::Flooding;
        }
        let tell = self
            .last_error
            .is_none_or(|t| now.saturating_duration_since(t) >= RATE_ERROR_INTERVAL);
        if tell {
            self.last_error = Some(now);
        }
        Verdict::Refused { tell }
    }
}

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

    #[test]
    fn frame_limit_refuses_tells_once_a_second_and_names_a_flood_once() {
        let start = Instant::now();
        let mut l = FrameLimit::new(1, 2);
        assert_eq!(l.check(start), Verdict::Pass);
        assert_eq!(l.check(start), Verdict::Pass);
        assert_eq!(l.check(start), Verdict::Refused { tell: true });
        // 2 burst x 4: the 8th refusal in a row is the flood, and only it.
        let later: Vec<Verdict> = (0..10).map(|_| l.check(start)).collect();
        assert_eq!(later[..6], [Verdict::Refused { tell: false }; 6]);
        assert_eq!(later[6], Verdict::Flooding);
        assert_eq!(later[7..], [Verdict::Refused { tell: false }; 3]);
        // A frame let through ends the run.
        let next = start + Duration::from_secs(2);
        assert_eq!(l.check(next), Verdict::Pass);
        assert_eq!(l.check(next), Verdict::Pass);
        assert_eq!(l.check(next), Verdict::Refused { tell: true });
    }
}
