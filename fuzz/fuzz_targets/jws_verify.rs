#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| health_fuzz::jws::run(data));
