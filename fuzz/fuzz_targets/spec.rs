//! Arbitrary bytes as a spec, and what a parsed spec drives in the core
//! (`tandem_core::fuzz::spec`). Run: see fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tandem_core::fuzz::spec(data);
});
