#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| uring_comet_fuzz::checks::chunked_body(data));
