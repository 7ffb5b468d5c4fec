//! Deliberately broken safety rules, for the simulator's proof that it
//! catches a broken build (`tandem-sim`'s mutation test).
//!
//! Without the `mutations` feature every switch here is a constant `false`.
//! With it, a switch is off until the thread that runs a simulation turns it
//! on for itself (thread-local: other tests in the same process, and every
//! real node, keep the rules whole).

#[cfg(feature = "mutations")]
use std::cell::Cell;

#[cfg(feature = "mutations")]
thread_local! {
    static CUT_PREDECESSOR_GRACE: Cell<bool> = const { Cell::new(false) };
}

/// True when a new coordinator is to skip its wait for the leases its
/// predecessor may have granted (invariant 2: fence before recover):
/// [`crate::lease::LeaseTable::lease_certainly_expired`] then believes at
/// once that a node it never heard from has no lease.
pub fn cut_predecessor_grace() -> bool {
    #[cfg(feature = "mutations")]
    {
        CUT_PREDECESSOR_GRACE.with(Cell::get)
    }
    #[cfg(not(feature = "mutations"))]
    {
        false
    }
}

/// Turns the mutation on or off for this thread.
#[cfg(feature = "mutations")]
pub fn set_cut_predecessor_grace(on: bool) {
    CUT_PREDECESSOR_GRACE.with(|c| c.set(on));
}
