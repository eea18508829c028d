//! Fuzz target: one frame to a typed receiver. See `courier_fuzz::frame_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    courier_fuzz::frame_decode::run(data);
});
