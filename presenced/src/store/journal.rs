//! The journal: announcement steps and fetch results ([`Change`]s) appended to
//! `state.journal` between full saves of the state file. A burst of 20 posts then costs 20
//! small appends and one full save instead of 21 full saves (measured: ≈ 14 ms of CPU for 21
//! saves of a 500-article state, ≈ 2 ms for 20 appends).
//!
//! Layout: `b"PRSNJ" | format version (u16 LE) | base length (u64 LE) | base crc32 (u32 LE)`,
//! then records `body length (u32 LE) | crc32 of the body (u32 LE) | bincode Vec<Change>`,
//! then zeros to the end of the file. The base names the state file the journal extends (its
//! length and its own checksum): a full save writes a new state file, so the journal left
//! beside it is stale and ignored — a crash between the save and the journal's reset
//! replays nothing twice.
//!
//! The zeros are written ahead of the records, [`CHUNK`] at a time, so that an append
//! overwrites blocks the file already has: its `fdatasync` then writes the record alone, not
//! the file's new size as well (measured here: a third less CPU per append). Format 1 had
//! no zeros and no [`Change::Fetched`]; it is read the same way.
//!
//! A crash can tear only the last record, and a torn record was never acted on (the core
//! waits for the append to be durable before posting), so it is dropped: a record that is
//! cut short, or fails its checksum with nothing but zeros after it. A bad record *followed
//! by others* is damage, and loading stops with a message naming the file.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bincode::Options;

use super::{io, options, StoreError};
use crate::state::Change;

const MAGIC: &[u8; 5] = b"PRSNJ";
/// The journal's own format version, frozen like the state's.
pub const FORMAT_VERSION: u16 = 2;
pub(super) const HEADER: usize = 5 + 2 + 8 + 4;
const RECORD_HEADER: usize = 4 + 4;
/// One record holds the changes of one turn of the core: a finish and the next begin, and
/// the fetch that found the article. A larger one is a full save instead.
const MAX_RECORD: u32 = 1024 * 1024;
/// How far ahead of the records the file is written with zeros.
pub(super) const CHUNK: u64 = 64 * 1024;

/// Which state file a journal extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base {
    len: u64,
    crc: u32,
}

impl Base {
    /// The base of a whole, valid state file (its last four bytes are its checksum).
    pub fn of(state_file: &[u8]) -> Base {
        let mut crc = [0u8; 4];
        if let Some(tail) = state_file.len().checked_sub(4).map(|at| &state_file[at..]) {
            crc.copy_from_slice(tail);
        }
        Base { len: state_file.len() as u64, crc: u32::from_le_bytes(crc) }
    }
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Length of the valid records while the file extends the current base; `None` when the
    /// next append must start the file afresh.
    valid: Option<u64>,
    open: Option<Open>,
    records: usize,
    /// Records were replayed from a journal of an older format: a full save folds them in
    /// before anything is appended in this one.
    older: bool,
}

/// The file being appended to.
#[derive(Debug)]
struct Open {
    file: File,
    /// To notice a file put in its place.
    ino: u64,
    /// Zeros ahead included.
    len: u64,
}

impl Journal {
    pub fn new(dir: &Path) -> Journal {
        Journal {
            path: dir.join("state.journal"),
            valid: None,
            open: None,
            records: 0,
            older: false,
        }
    }

    /// Where the records end (the zeros ahead of them start).
    #[cfg(test)]
    pub fn valid(&self) -> Option<u64> {
        self.valid
    }

    /// Records appended since the last full save.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes of those records.
    pub fn bytes(&self) -> u64 {
        self.valid.unwrap_or(0)
    }

    /// Whether the journal can take the next record: the file still holds what this process
    /// appended (one deleted, replaced or cut short behind its back lost records that only a
    /// full save can make durable again), and it is of this format.
    pub fn intact(&self) -> bool {
        if self.older {
            return false;
        }
        match (self.valid, &self.open) {
            (None, _) => true,
            (Some(valid), Some(open)) => {
                std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == open.ino && m.len() >= valid)
            }
            (Some(valid), None) => std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= valid),
        }
    }

    /// After a full save: what the file holds is in the state file now.
    pub fn reset(&mut self) {
        self.valid = None;
        self.open = None;
        self.records = 0;
        self.older = false;
    }

    /// The records journaled on top of `base`, oldest first, each as the changes it holds.
    pub fn read(&mut self, base: Base) -> Result<Vec<Vec<Change>>, StoreError> {
        self.reset();
        let mut bytes = Vec::new();
        match File::open(&self.path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(io(&self.path, "read"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.path, "open")(e)),
        };
        let parsed = parse(&bytes, base, &self.path)?;
        if parsed.valid.is_some() {
            self.records = parsed.records.len();
        }
        self.valid = parsed.valid;
        self.older = parsed.version < FORMAT_VERSION && !parsed.records.is_empty();
        Ok(parsed.records)
    }

    /// Appends one record and makes it durable; false (nothing written) when the record
    /// would be larger than a reader accepts.
    pub fn append(&mut self, base: Base, changes: &[Change]) -> Result<bool, StoreError> {
        let body = options().serialize(changes).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            version: FORMAT_VERSION,
            message: format!("cannot encode: {e}"),
        })?;
        if body.len() > MAX_RECORD as usize {
            return Ok(false);
        }
        let mut out = Vec::with_capacity(HEADER + RECORD_HEADER + body.len());
        if self.valid.is_none() {
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            out.extend_from_slice(&base.len.to_le_bytes());
            out.extend_from_slice(&base.crc.to_le_bytes());
        }
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);

        let start = self.valid.unwrap_or(0);
        self.valid = None;
        let Open { file, ino, len } = match self.open.take() {
            Some(open) if start > 0 => open,
            // A fresh journal, or the first append after a start: whatever follows the valid
            // records (a torn record, a stale journal) goes first.
            _ => {
                let existed = self.path.exists();
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .open(&self.path)
                    .map_err(io(&self.path, "open"))?;
                file.set_len(start).map_err(io(&self.path, "truncate"))?;
                if !existed {
                    let dir = self.path.parent().unwrap_or(Path::new("."));
                    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir, "fsync"))?;
                }
                let ino = file.metadata().map_err(io(&self.path, "stat"))?.ino();
                Open { file, ino, len: start }
            }
        };
        let end = start + out.len() as u64;
        let len = if end > len {
            let ahead = (end + CHUNK / 4).next_multiple_of(CHUNK);
            out.resize(out.len() + (ahead - end) as usize, 0);
            ahead
        } else {
            len
        };
        file.write_all_at(&out, start).map_err(io(&self.path, "write"))?;
        file.sync_data().map_err(io(&self.path, "fsync"))?;
        self.open = Some(Open { file, ino, len });
        self.valid = Some(end);
        self.records += 1;
        Ok(true)
    }
}

struct Parsed {
    version: u16,
    records: Vec<Vec<Change>>,
    /// Length of the valid records, `None` when the journal is stale or empty and the next
    /// append starts afresh.
    valid: Option<u64>,
}

/// The records of a journal on top of `base`.
fn parse(bytes: &[u8], base: Base, path: &Path) -> Result<Parsed, StoreError> {
    let nothing = |version| Ok(Parsed { version, records: Vec::new(), valid: None });
    if bytes.len() < HEADER {
        // Empty, or a header torn by a crash: nothing was journaled on it.
        return if MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
            nothing(FORMAT_VERSION)
        } else {
            Err(StoreError::BadMagic { path: path.to_owned() })
        };
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::BadMagic { path: path.to_owned() });
    }
    let version = u16::from_le_bytes([bytes[5], bytes[6]]);
    if version > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[7..15]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[15..HEADER]);
    if (Base { len: u64::from_le_bytes(len), crc: u32::from_le_bytes(crc) }) != base {
        return nothing(version);
    }
    let zeros = |from: usize| bytes.get(from..).unwrap_or_default().iter().all(|&b| b == 0);
    let mut records = Vec::new();
    let mut at = HEADER;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let Some((head, after)) = rest.split_first_chunk::<RECORD_HEADER>() else {
            break; // torn record header
        };
        let body_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if body_len == 0 {
            // No record is empty (a list of changes starts with its length): the zeros
            // written ahead of the records, which must go on to the end.
            if zeros(at) {
                break;
            }
            return Err(damaged(path, at, "data after the end of the records"));
        }
        if body_len > MAX_RECORD {
            return Err(damaged(path, at, "record length out of range"));
        }
        let Some(body) = after.get(..body_len as usize) else {
            break; // torn body
        };
        let end = at + RECORD_HEADER + body.len();
        if crc32fast::hash(body) != crc {
            if zeros(end) {
                break; // the last record, torn by a crash before its bytes all reached disk
            }
            return Err(damaged(path, at, "checksum mismatch"));
        }
        let changes: Vec<Change> = options()
            .deserialize(body)
            .map_err(|e| damaged(path, at, &format!("cannot decode: {e}")))?;
        records.push(changes);
        at = end;
    }
    Ok(Parsed { version, records, valid: Some(at as u64) })
}

fn damaged(path: &Path, at: usize, what: &str) -> StoreError {
    StoreError::Decode {
        path: path.to_owned(),
        version: FORMAT_VERSION,
        message: format!(
            "record at byte {at}: {what}; moving the journal aside starts from the state \
             file alone, which may repeat the posts the journal recorded"
        ),
    }
}
