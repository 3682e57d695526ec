//! Fuzz target: `certrot::inputs::service_key`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certrot::inputs::service_key(data));
