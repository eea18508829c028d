//! Fuzz target: a frame with fds of chosen kinds. See `courier_fuzz::fd_table`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    courier_fuzz::fd_table::run(data);
});
