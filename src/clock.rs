//! The one place where time enters a core: shells read the clocks, cores take a [`Now`].

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A reading of both clocks at one moment. Monotonic time drives rate windows and timers; wall
/// time is what gets persisted (binding expiry) and embedded in nonces, since both must survive
/// a restart.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// Reads the system clocks. Only shells call this.
    pub fn system() -> Now {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Now {
            instant: Instant::now(),
            unix_ms,
        }
    }

    pub fn unix_secs(&self) -> u64 {
        self.unix_ms / 1000
    }

    /// The same moment shifted forward, for tests that drive time.
    pub fn plus_ms(&self, ms: u64) -> Now {
        Now {
            instant: self.instant + std::time::Duration::from_millis(ms),
            unix_ms: self.unix_ms + ms,
        }
    }
}
