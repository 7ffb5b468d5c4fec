//! Cluster timing and the monotonic time type used by every decision.

use std::time::Duration;

/// Milliseconds on a monotonic clock with an arbitrary origin.
///
/// The core never reads a clock; adapters pass `now` in. Only differences
/// between two `Millis` of the same node are meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    pub fn plus(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(duration_ms(d)))
    }

    /// `d` earlier, saturating at the origin.
    pub fn minus(self, d: Duration) -> Millis {
        Millis(self.0.saturating_sub(duration_ms(d)))
    }
}

/// The longest duration a spec, a configuration or a command line may give
/// (365 days). Every timeout, interval and margin Tandem takes from input is
/// at most this, so deadlines counted on a monotonic clock never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Why a duration given as text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadDuration {
    /// Not a duration at all.
    Malformed,
    /// Longer than [`MAX_DURATION`].
    TooLong,
}

/// Parses a duration as humantime writes it ("500ms", "20s", "1h 30m") and
/// refuses one longer than [`MAX_DURATION`]. Callers name the field; for
/// [`BadDuration::TooLong`], [`too_long`] is the message.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    let d = humantime::parse_duration(text).map_err(|_| BadDuration::Malformed)?;
    if d > MAX_DURATION {
        return Err(BadDuration::TooLong);
    }
    Ok(d)
}

/// The message for a duration longer than [`MAX_DURATION`].
pub fn too_long(text: &str) -> String {
    format!("expected at most {}days, got {text:?}", MAX_DURATION.as_secs() / 86_400)
}

/// A duration in whole milliseconds, saturating.
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The timing of a cluster. Every node of a cluster should use the same values.
///
/// Safety depends on these relations, checked by [`Timing::validate`]:
/// * `heartbeat_interval < election_timeout`: a healthy coordinator is not
///   deposed between two heartbeats;
/// * `lease > 2 * election_timeout + heartbeat_interval`: a lease outlives a
///   coordinator change, so a healthy node keeps its lease through one;
/// * `clock_drift_margin < lease`: the margin is a correction, not the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a node sends a heartbeat to the coordinator, and how often
    /// the coordinator sends Raft heartbeats to the other voters.
    pub heartbeat_interval: Duration,
    /// The randomised part of the wait before a voter starts an election: a
    /// voter that last heard from the coordinator waits twice this (Raft's
    /// leader lease), then a random time between this and twice this.
    pub election_timeout: Duration,
    /// How long a granted lease lasts, counted by the node from the moment it
    /// sent the heartbeat that earned it.
    pub lease: Duration,
    /// The largest difference between two nodes' clock *rates* over one lease,
    /// expressed as a duration added to every lease the coordinator reasons about.
    pub clock_drift_margin: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(100),
            lease: Duration::from_millis(2000),
            clock_drift_margin: Duration::from_millis(200),
        }
    }
}

impl Timing {
    /// The upper end of the randomised election timeout.
    pub fn election_timeout_max(&self) -> Duration {
        self.election_timeout.saturating_mul(2)
    }

    /// Checks the relations between the values. The error names the setting
    /// (as in the configuration file) and what is expected.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let zero = Duration::ZERO;
        for (key, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("election_timeout", self.election_timeout),
            ("lease", self.lease),
        ] {
            if value == zero {
                return Err((key, "expected a duration greater than zero".into()));
            }
        }
        for (key, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("election_timeout", self.election_timeout),
            ("lease", self.lease),
            ("clock_drift_margin", self.clock_drift_margin),
        ] {
            if value > MAX_TIMING {
                return Err((
                    key,
                    format!(
                        "expected at most {}, got {}",
                        fmt_duration(MAX_TIMING),
                        fmt_duration(value)
                    ),
                ));
            }
        }
        if self.heartbeat_interval >= self.election_timeout {
            return Err((
                "heartbeat_interval",
                format!(
                    "expected less than election_timeout ({}), got {}",
                    fmt_duration(self.election_timeout),
                    fmt_duration(self.heartbeat_interval)
                ),
            ));
        }
        let lease_min = self.election_timeout_max().saturating_add(self.heartbeat_interval);
        if self.lease <= lease_min {
            return Err((
                "lease",
                format!(
                    "expected more than 2 x election_timeout + heartbeat_interval ({}), got {}",
                    fmt_duration(lease_min),
                    fmt_duration(self.lease)
                ),
            ));
        }
        if self.clock_drift_margin >= self.lease {
            return Err((
                "clock_drift_margin",
                format!(
                    "expected less than lease ({}), got {}",
                    fmt_duration(self.lease),
                    fmt_duration(self.clock_drift_margin)
                ),
            ));
        }
        Ok(())
    }
}

/// The longest timing value accepted: longer ones are mistakes, and keeping
/// them bounded keeps all timing arithmetic far from overflow.
pub const MAX_TIMING: Duration = Duration::from_secs(3600);

/// Formats a duration the way configuration files write it (`150ms`, `2s`).
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Timing::default().validate(), Ok(()));
    }

    #[test]
    fn heartbeat_must_be_shorter_than_election_timeout() {
        let t = Timing {
            heartbeat_interval: Duration::from_millis(300),
            ..Timing::default()
        };
        let (key, msg) = t.validate().unwrap_err();
        assert_eq!(key, "heartbeat_interval");
        assert!(msg.contains("election_timeout (100ms)"), "{msg}");
    }

    #[test]
    fn lease_must_outlive_a_coordinator_change() {
        let t = Timing {
            lease: Duration::from_millis(250),
            ..Timing::default()
        };
        assert_eq!(t.validate().unwrap_err().0, "lease");
    }

    #[test]
    fn absurd_values_are_refused_not_overflowed() {
        let t = Timing {
            election_timeout: Duration::from_secs(u64::MAX / 4),
            ..Timing::default()
        };
        assert_eq!(t.validate().unwrap_err().0, "election_timeout");
        let t = Timing {
            lease: Duration::from_secs(u64::MAX),
            ..Timing::default()
        };
        assert!(t.validate().unwrap_err().1.contains("expected at most 1h"));
    }

    #[test]
    fn millis_arithmetic_saturates() {
        assert_eq!(Millis(5).since(Millis(9)), Duration::ZERO);
        assert_eq!(Millis(u64::MAX).plus(Duration::from_secs(1)), Millis(u64::MAX));
    }
}
