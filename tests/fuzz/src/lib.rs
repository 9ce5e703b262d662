//! What more than one fuzz target needs.

use std::path::Path;

use presenced::store::{self, StoreError};

/// A format-1 state file around `body`, laid out as `presenced::store` writes it:
/// `b"PRSNC" | version (u16 LE) | body length (u64 LE) | body | crc32 (u32 LE)`.
pub fn envelope(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 19);
    out.extend_from_slice(b"PRSNC");
    out.extend_from_slice(&store::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A journal of `version` extending `state_file`: the header naming it (its length and its
/// checksum, the last four bytes), then `records` as they are.
pub fn journal(version: u16, state_file: &[u8], records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + records.len());
    out.extend_from_slice(b"PRSNJ");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(state_file.len() as u64).to_le_bytes());
    out.extend_from_slice(&state_file[state_file.len().saturating_sub(4)..]);
    out.extend_from_slice(records);
    out
}

/// The body of a state file, if `file` is a whole one.
pub fn body(file: &[u8]) -> Option<&[u8]> {
    file.get(15..file.len().checked_sub(4)?)
}

/// Decodes a state file: errors name the file and are one line; a state that loads saves
/// and loads again unchanged.
pub fn check_state_file(data: &[u8]) {
    let path = Path::new("/fuzz/state");
    match store::decode(data, path) {
        Ok(state) => {
            let saved = store::encode(&state).expect("a loaded state encodes");
            let again = store::decode(&saved, path).expect("a saved state loads");
            assert_eq!(again, state, "state changed by a save and load");
            // The saved form is canonical: saving what was loaded from it gives it back.
            assert_eq!(store::encode(&again).expect("encodes"), saved);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("/fuzz/state: "), "{message}");
            assert!(!message.contains('\n'), "multi-line error: {message:?}");
            if let StoreError::Io { .. } | StoreError::Locked { .. } = e {
                panic!("decode did i/o: {message}");
            }
        }
    }
}
