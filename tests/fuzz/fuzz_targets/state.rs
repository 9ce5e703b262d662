//! The state loader, `presenced::store::decode`, on arbitrary bytes: the envelope (magic,
//! version, length, crc32) and, rarely, the bincode body behind it. See `state_body` for
//! the body alone.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    presence_fuzz::check_state_file(data);
});
