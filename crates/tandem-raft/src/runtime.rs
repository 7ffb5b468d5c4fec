//! openraft's async runtime for Tandem: tokio, with random draws (election
//! timeouts, the first tick) that repeat with a seed inside
//! [`SeededRuntime::scope`].
//!
//! A real node never enters a scope, so its draws come from a random seed
//! as before. The deterministic simulator (`tandem-sim`) starts each node's
//! Raft inside a scope seeded from the run's seed: every task openraft
//! spawns from there derives its own seed from its parent's (as openraft's
//! `DeterministicRng` does), so a run replays bit for bit. Unlike
//! `DeterministicRng`, a call outside any scope (openraft spawns from the
//! caller's task in a few API calls) falls back to a random seed instead of
//! panicking.

use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use openraft::TokioRuntime;
use openraft::rt::{AsyncRuntime, OptionalSend};
use rand010::SeedableRng;
use rand010::rngs::SmallRng;

tokio::task_local! {
    static SEED: Cell<u64>;
}

/// SplitMix64 with the given increment: a bijective mixer.
fn splitmix64(seed: u64, gamma: u64) -> u64 {
    let z = seed.wrapping_add(gamma);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const SPAWN: u64 = 0x9e37_79b9_7f4a_7c15;
const ADVANCE: u64 = 0x6a09_e667_f3bc_c908;

/// The current scope's seed, advanced; `None` outside any scope.
fn take_seed() -> Option<u64> {
    SEED.try_with(|c| {
        let s = c.get();
        c.set(splitmix64(s, ADVANCE));
        s
    })
    .ok()
}

fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// tokio, with seedable random draws (see the module's description).
#[derive(Debug)]
pub struct SeededRuntime {
    inner: TokioRuntime,
}

impl SeededRuntime {
    /// Runs `f` with `seed` as the seed of every draw it and the tasks it
    /// spawns through openraft make.
    pub fn scope<F: Future>(seed: u64, f: F) -> impl Future<Output = F::Output> {
        SEED.scope(Cell::new(seed), f)
    }
}

impl AsyncRuntime for SeededRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match take_seed() {
            Some(s) => TokioRuntime::spawn(SEED.scope(Cell::new(splitmix64(s, SPAWN)), future)),
            None => TokioRuntime::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SmallRng::seed_from_u64(take_seed().unwrap_or_else(random_seed))
    }

    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        SeededRuntime {
            inner: TokioRuntime::new(threads),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }
}
