//! Fuzz target: `certrot::inputs::servicebinding_metadata`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certrot::inputs::servicebinding_metadata(data));
