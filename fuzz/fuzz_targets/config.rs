//! Arbitrary bytes as a node configuration (`tandem_core::fuzz::config`).
//! Run: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tandem_core::fuzz::config(data);
});
