#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| e2ebackup_fuzz::keyslot_unwrap(data));
