//! Fuzz target: `certrot::inputs::kubernetes_annotations`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certrot::inputs::kubernetes_annotations(data));
