//! Fuzz target: `certrot::inputs::state_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certrot::inputs::state_file(data));
