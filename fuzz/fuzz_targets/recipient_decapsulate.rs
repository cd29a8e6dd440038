#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| e2ebackup_fuzz::recipient_decapsulate(data));
