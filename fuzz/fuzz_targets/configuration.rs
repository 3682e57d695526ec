//! Fuzz target: `certrot::inputs::configuration`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certrot::inputs::configuration(data));
