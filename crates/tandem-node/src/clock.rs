//! The one way the node runtime reads time.
//!
//! [`Clock::now`] is monotonic milliseconds (`Millis`, what the core reasons
//! with): every deadline, lease, retry and timeout of the runtime is taken
//! on it, and turned into a tokio sleep only where it is awaited
//! (`tokio::time::sleep(deadline.since(clock.now()))`). [`Clock::unix_ms`]
//! is the wall clock, for event records and display only.
//!
//! A node runs on [`Clock::system`]; a test drives a [`Clock::manual`]
//! instead; the deterministic simulator gives each node a
//! [`Clock::simulated`] that follows tokio's (paused) time at the node's own
//! rate, with its own boot-time clock and boot id. Nothing else in this crate reads a system clock (its
//! `clippy.toml` forbids it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tandem_core::Millis;
use tandem_core::timing::duration_ms;

/// The node's clock. Cheap to read and to clone.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// The system's clocks; monotonic time counts from `origin`.
    System { origin: Instant },
    /// Moves only when its [`ManualClock`] says.
    Manual(Arc<ManualTime>),
    /// tokio's time (paused in the simulator) at a rate of its own.
    Simulated(Arc<SimulatedTime>),
}

#[derive(Debug)]
struct SimulatedTime {
    origin: tokio::time::Instant,
    /// Parts per million of tokio's rate (1_000_000: the same rate).
    rate_ppm: u64,
    unix_origin_ms: u64,
    boot_id: String,
}

#[derive(Debug)]
struct ManualTime {
    now_ms: AtomicU64,
    unix_ms: AtomicU64,
}

/// Drives a manual clock (for tests): time stands still until advanced.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<ManualTime>);

impl Clock {
    /// The system's clocks: monotonic milliseconds since this call (so
    /// since the process started, for the node's clock).
    pub fn system() -> Clock {
        Clock {
            source: Source::System {
                origin: system::instant_now(),
            },
        }
    }

    /// A clock that starts at `Millis(0)` and wall-clock `unix_ms`, and
    /// moves only through the returned [`ManualClock`].
    pub fn manual(unix_ms: u64) -> (Clock, ManualClock) {
        let time = Arc::new(ManualTime {
            now_ms: AtomicU64::new(0),
            unix_ms: AtomicU64::new(unix_ms),
        });
        (
            Clock {
                source: Source::Manual(time.clone()),
            },
            ManualClock(time),
        )
    }

    /// A simulated machine's clock (`tandem-sim`): starts at `Millis(0)`
    /// now, follows tokio's time at `rate_ppm` millionths of its rate, shows
    /// `unix_origin_ms` as its wall clock at the start, and counts boot time
    /// from the start too (the machine booted now, as `boot_id`).
    pub fn simulated(rate_ppm: u64, unix_origin_ms: u64, boot_id: String) -> Clock {
        Clock {
            source: Source::Simulated(Arc::new(SimulatedTime {
                origin: system::tokio_now(),
                rate_ppm,
                unix_origin_ms,
                boot_id,
            })),
        }
    }

    /// Monotonic milliseconds since the clock's origin.
    pub fn now(&self) -> Millis {
        match &self.source {
            Source::System { origin } => Millis(duration_ms(system::elapsed(*origin))),
            Source::Manual(t) => Millis(t.now_ms.load(Relaxed)),
            Source::Simulated(t) => {
                let us = u128::from(t.rate_ppm) * system::tokio_now().duration_since(t.origin).as_micros() / 1_000_000;
                Millis(u64::try_from(us / 1000).unwrap_or(u64::MAX))
            }
        }
    }

    /// Wall-clock milliseconds since the Unix epoch, for event records and
    /// display; never for decisions on this node.
    pub fn unix_ms(&self) -> u64 {
        match &self.source {
            Source::System { .. } => system::unix_ms(),
            Source::Manual(t) => t.unix_ms.load(Relaxed),
            Source::Simulated(t) => t.unix_origin_ms.saturating_add(self.now().0),
        }
    }

    /// Milliseconds since the machine booted (a clock an agent restart does
    /// not reset): `/proc/uptime`, or a simulated machine's.
    pub fn boot_ms(&self) -> Option<u64> {
        match &self.source {
            Source::Simulated(_) => Some(self.now().0),
            _ => uptime_ms(),
        }
    }

    /// This boot's id: `/proc/sys/kernel/random/boot_id`, or a simulated
    /// machine's.
    pub fn boot_id(&self) -> String {
        match &self.source {
            Source::Simulated(t) => t.boot_id.clone(),
            _ => std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl ManualClock {
    /// Moves both the monotonic and the wall clock on by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = duration_ms(d);
        self.0.now_ms.fetch_add(ms, Relaxed);
        self.0.unix_ms.fetch_add(ms, Relaxed);
    }

    /// Sets the wall clock alone (a step of the system's time); the
    /// monotonic clock does not move.
    pub fn set_unix_ms(&self, unix_ms: u64) {
        self.0.unix_ms.store(unix_ms, Relaxed);
    }
}

/// The system's clocks: the only place in the runtime that reads them.
#[allow(clippy::disallowed_methods)]
mod system {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    pub fn instant_now() -> Instant {
        Instant::now()
    }

    /// tokio's time: paused and advanced by the simulator.
    pub fn tokio_now() -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    pub fn elapsed(origin: Instant) -> Duration {
        origin.elapsed()
    }

    pub fn unix_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(tandem_core::timing::duration_ms)
            .unwrap_or(0)
    }
}

/// Milliseconds since boot, from `/proc/uptime` (the boot-time clock, which
/// an agent restart does not reset).
pub fn uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let (clock, hand) = Clock::manual(1_000_000);
        let copy = clock.clone();
        assert_eq!(clock.now(), Millis(0));
        hand.advance(Duration::from_millis(1_500));
        assert_eq!(copy.now(), Millis(1_500), "clones read the same time");
        assert_eq!(clock.unix_ms(), 1_001_500);
        hand.set_unix_ms(5);
        assert_eq!(clock.unix_ms(), 5);
        assert_eq!(
            clock.now(),
            Millis(1_500),
            "a wall-clock step leaves monotonic time alone"
        );
    }

    #[test]
    fn the_system_clock_is_monotonic_and_starts_near_zero() {
        let clock = Clock::system();
        let a = clock.now();
        let b = clock.now();
        assert!(a <= b);
        assert!(a.0 < 1_000, "{a:?}");
        assert!(clock.unix_ms() > 1_600_000_000_000, "after 2020");
    }
}
