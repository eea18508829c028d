//! Fuzz target: a peer's side of the handshake. See `courier_fuzz::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| courier_fuzz::handshake::run(data));
