//! The state journal, replayed by `presenced::store::Store::load` on top of the golden
//! format-1 state file. Byte 0 picks how the rest becomes `state.journal`:
//! 0: records whose lengths and checksums are fixed up (each body: a u16 LE length, then
//! that many bytes), so that bincode and `State::apply` see the fuzzer's bytes;
//! 1: a valid header for the state file, then the raw bytes; other: the raw bytes alone.
//! Bit 7 of byte 0 picks the journal format of the header: 1 (records only) or 2 (records,
//! then zeros).
#![no_main]

use std::fs;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use presenced::store::{self, Store};

const STATE: &[u8] = include_bytes!("../../../presenced/tests/data/state-v1.bin");

struct Dir {
    path: PathBuf,
    store: Store,
}

thread_local! {
    /// One state directory for the whole run (the store holds its lock).
    static DIR: Dir = {
        // In memory where there is a tmpfs: on disk, rewriting the journal each run waits
        // for writeback (ext4 flushes a file replaced by truncation).
        let shm = PathBuf::from("/dev/shm");
        let tmp = if shm.is_dir() { shm } else { std::env::temp_dir() };
        // Directories of earlier runs, whose process is gone, go first.
        for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("presence-fuzz-journal-") {
                if !PathBuf::from(format!("/proc/{pid}")).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let path = tmp.join(format!("presence-fuzz-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        let store = Store::open(&path).expect("opens a fresh state dir");
        fs::write(path.join("state"), STATE).expect("writes the state file");
        Dir { path, store }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let version = if mode & 0x80 == 0 { 2 } else { 1 };
    let journal = match mode & 0x7f {
        0 => presence_fuzz::journal(version, STATE, &records(rest)),
        1 => presence_fuzz::journal(version, STATE, rest),
        _ => rest.to_vec(),
    };
    DIR.with(|dir| check(dir, &journal));
});

fn check(dir: &Dir, journal: &[u8]) {
    fs::write(dir.path.join("state.journal"), journal).expect("writes the journal");
    match dir.store.load() {
        Ok(Some(state)) => {
            let saved = store::encode(&state).expect("a replayed state encodes");
            let again = store::decode(&saved, &dir.path).expect("a replayed state loads");
            assert_eq!(again, state, "state changed by a save and load");
        }
        Ok(None) => panic!("the state file was not found"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("state"), "{message}");
            assert!(!message.contains('\n'), "multi-line error: {message:?}");
        }
    }
}

/// Records with their lengths and checksums fixed up.
fn records(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (body, rest) = rest.split_at(len);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        data = rest;
    }
    out
}
