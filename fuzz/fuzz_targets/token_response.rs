//! Fuzz target: `certrot::inputs::token_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certrot::inputs::token_response(data));
