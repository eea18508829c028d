//! Fuzz target: a byte stream into courier-pipe's reader. See
//! `courier_fuzz::pipe_framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| courier_fuzz::pipe_framing::run(data));
