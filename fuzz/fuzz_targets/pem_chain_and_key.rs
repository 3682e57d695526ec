//! Fuzz target: `certrot::inputs::pem_chain_and_key`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certrot::inputs::pem_chain_and_key(data));
