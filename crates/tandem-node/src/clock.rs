//! The one way the node runtime reads time.
//!
//! [`Clock::now`] is monotonic milliseconds (`Millis`, what the core reasons
//! with): every deadline, lease, retry and timeout of the runtime is taken
//! on it, and turned into a tokio sleep only where it is awaited
//! (`tokio::time::sleep(deadline.since(clock.now()))`). [`Clock::unix_ms`]
//! is the wall clock, for event records and display only.
//!
//! A node runs on [`Clock::system`]; a test drives a [`Clock::manual`]
//! instead. Nothing else in this crate reads a system clock (its
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

    /// Monotonic milliseconds since the clock's origin.
    pub fn now(&self) -> Millis {
        match &self.source {
            Source::System { origin } => Millis(duration_ms(system::elapsed(*origin))),
            Source::Manual(t) => Millis(t.now_ms.load(Relaxed)),
        }
    }

    /// Wall-clock milliseconds since the Unix epoch, for event records and
    /// display; never for decisions on this node.
    pub fn unix_ms(&self) -> u64 {
        match &self.source {
            Source::System { .. } => system::unix_ms(),
            Source::Manual(t) => t.unix_ms.load(Relaxed),
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
