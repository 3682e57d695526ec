//! Fuzz target: `certrot::inputs::service_manager_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certrot::inputs::service_manager_answer(data));
