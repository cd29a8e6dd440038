#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| e2ebackup_fuzz::crypt15_decrypt(data));
