//! The monotonic clock that feeds the core.

use std::time::Instant;

use tandem_core::Millis;

/// Monotonic milliseconds since the clock was created (process start).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock { origin: Instant::now() }
    }

    pub fn now(&self) -> Millis {
        Millis(tandem_core::timing::duration_ms(self.origin.elapsed()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Wall-clock time for event records and display; never used for decisions.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(tandem_core::timing::duration_ms)
        .unwrap_or(0)
}
