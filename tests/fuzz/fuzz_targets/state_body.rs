//! The state loader's bincode body: the fuzzer's bytes are wrapped in a valid envelope
//! (magic, format 1, their length, their crc32), so that the checksum does not stop every
//! mutation before bincode sees it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    presence_fuzz::check_state_file(&presence_fuzz::envelope(body));
});
