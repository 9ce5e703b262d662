//! The state file: the only code that touches the state directory's `state*` files.
//!
//! Layout: `b"PRSNC" | format version (u16 LE) | body length (u64 LE) | bincode body |
//! crc32 (u32 LE) of everything before it`. bincode is pinned to 1.3.3 and used here only
//! with explicit options and a size limit.
//!
//! A save writes `state.tmp`, fsyncs it, hard-links the current `state` to `state.prev`
//! (the previous good file, for a human to recover from), renames `state.tmp` over `state`
//! and fsyncs the directory: at every instant `state` is a whole, valid file. Only a `state`
//! this process read whole or wrote becomes `state.prev`: one changed behind its back (a
//! truncated copy, say) is overwritten from memory, never kept as the good one.
//! A file that is corrupt, truncated or from a newer presenced is never overwritten and
//! never replaced by an empty state: loading fails with a message naming the file.
//! An exclusive lock on `state.lock` keeps two daemons off one state directory.
//!
//! Between full saves, announcement steps and fetch results are appended to `state.journal`
//! instead (see [`journal`]); loading replays them. A full save, on any other change, after
//! 256 records or 1 MiB of them, and at a clean stop, folds them into the state file.

mod journal;

use std::cell::{Cell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bincode::Options;

use crate::state::{Change, State};
use journal::{Base, Journal};

const MAGIC: &[u8; 5] = b"PRSNC";
/// Version 1 is the first format. A later version keeps a frozen copy of each older
/// format's types and migrates from them.
pub const FORMAT_VERSION: u16 = 1;
/// Larger than any real state (100k conversations fit in a few tens of MiB), small enough
/// that a corrupt length cannot make the loader allocate without bound.
const MAX_BODY: u64 = 512 * 1024 * 1024;
const HEADER: usize = 5 + 2 + 8;
/// Records, and bytes of them, appended before a full save folds them into the state file:
/// bounds the journal and the time a start spends replaying it.
const MAX_JOURNAL_RECORDS: usize = 256;
const MAX_JOURNAL_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {op}: {source}", path.display())]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    #[error("{}: not a presenced state file (bad magic)", path.display())]
    BadMagic { path: PathBuf },
    #[error("{}: truncated ({len} bytes, expected {expected}); the previous good state may be in state.prev", path.display())]
    Truncated { path: PathBuf, len: u64, expected: u64 },
    #[error("{}: checksum mismatch, the file is corrupt; the previous good state may be in state.prev", path.display())]
    Checksum { path: PathBuf },
    #[error("{}: written by a newer presenced (format {found}, this one reads up to {supported}); upgrade presenced or restore state.prev", path.display())]
    NewerFormat { path: PathBuf, found: u16, supported: u16 },
    #[error("{}: cannot decode (format {version}): {message}", path.display())]
    Decode { path: PathBuf, version: u16, message: String },
    #[error("{}: another presenced uses this state directory", path.display())]
    Locked { path: PathBuf },
}

/// The state directory, locked for this process.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
    /// The `state` this process last read whole or wrote, to tell it from a file put there
    /// by someone else.
    known: Cell<Option<FileId>>,
    /// The state file the journal extends: the one this process last read whole or wrote.
    base: Cell<Option<Base>>,
    journal: RefCell<Journal>,
    /// A failed append may have left a torn record: the next commit is a full save.
    must_save: Cell<bool>,
}

/// Enough of a file's identity to notice a replacement or an edit in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId { ino: meta.ino(), len: meta.len(), mtime: (meta.mtime(), meta.mtime_nsec()) }
    }
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { path: path.to_owned(), op, source }
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir, "create"))?;
        let lock_path = dir.join("state.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path, "open"))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| StoreError::Locked { path: dir.to_owned() })?;
        Ok(Store {
            dir: dir.to_owned(),
            path: dir.join("state"),
            _lock: lock,
            known: Cell::new(None),
            base: Cell::new(None),
            journal: RefCell::new(Journal::new(dir)),
            must_save: Cell::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saved state with its journal replayed, or `None` when there is none yet (a first
    /// start).
    pub fn load(&self) -> Result<Option<State>, StoreError> {
        let Some(bytes) = read_state_file(&self.dir)? else { return Ok(None) };
        let state = replayed(&bytes, &self.path, &mut self.journal.borrow_mut())?;
        self.known.set(fs::metadata(&self.path).ok().map(|m| FileId::of(&m)));
        self.base.set(Some(Base::of(&bytes)));
        Ok(Some(state))
    }

    /// Whether the journal holds changes the state file does not: a clean stop folds them in.
    pub fn journaled(&self) -> bool {
        self.journal.borrow().records() > 0
    }

    /// Makes `changes`, already applied to `state`, durable: appended to the journal when
    /// it extends the state file on disk, else by a full save.
    pub fn commit(&self, state: &State, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let unchanged = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| Some(FileId::of(&meta)) == self.known.get());
        let mut journal = self.journal.borrow_mut();
        match self.base.get() {
            Some(base)
                if unchanged
                    && journal.intact()
                    && !self.must_save.get()
                    && journal.records() < MAX_JOURNAL_RECORDS
                    && journal.bytes() < MAX_JOURNAL_BYTES =>
            {
                match journal.append(base, changes) {
                    Ok(true) => Ok(()),
                    // Too large for one record (a fetch that added thousands of articles).
                    Ok(false) => {
                        drop(journal);
                        self.save(state)
                    }
                    Err(e) => {
                        self.must_save.set(true);
                        Err(e)
                    }
                }
            }
            _ => {
                drop(journal);
                self.save(state)
            }
        }
    }

    /// Writes the whole state file; the journal starts afresh on top of it.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        // Until this save is through, the journal may not extend whichever file is on disk.
        self.must_save.set(true);
        let bytes = encode(state).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            version: FORMAT_VERSION,
            message: format!("cannot encode: {e}"),
        })?;
        let tmp = self.dir.join("state.tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "create"))?;
        file.write_all(&bytes).map_err(io(&tmp, "write"))?;
        file.sync_all().map_err(io(&tmp, "fsync"))?;
        let written = file.metadata().ok().map(|m| FileId::of(&m));
        drop(file);
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if Some(FileId::of(&meta)) == self.known.get() => {
                let prev_tmp = self.dir.join("state.prev.tmp");
                let _ = fs::remove_file(&prev_tmp);
                fs::hard_link(&self.path, &prev_tmp).map_err(io(&prev_tmp, "link"))?;
                #[allow(clippy::disallowed_methods)]
                fs::rename(&prev_tmp, self.dir.join("state.prev"))
                    .map_err(io(&prev_tmp, "rename"))?;
            }
            Ok(_) => tracing::warn!(
                "{}: changed or replaced while presenced was running; writing it again from \
                 memory (state.prev keeps the last file presenced wrote)",
                self.path.display()
            ),
            Err(_) => {}
        }
        #[allow(clippy::disallowed_methods)]
        fs::rename(&tmp, &self.path).map_err(io(&self.path, "rename"))?;
        self.known.set(written);
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir, "fsync"))?;
        self.base.set(Some(Base::of(&bytes)));
        self.journal.borrow_mut().reset();
        self.must_save.set(false);
        Ok(())
    }
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_BODY)
        .reject_trailing_bytes()
}

/// What a state directory holds, read without taking its lock (for tools and tests watching
/// a running daemon): the state file with its journal replayed, as a start would load it.
pub fn peek(dir: &Path) -> Result<Option<State>, StoreError> {
    let Some(bytes) = read_state_file(dir)? else { return Ok(None) };
    replayed(&bytes, &dir.join("state"), &mut Journal::new(dir)).map(Some)
}

/// The records journaled on top of the state file in `dir`, each as the changes it holds
/// (read without the lock): how a running daemon grouped its durable writes.
pub fn peek_journal(dir: &Path) -> Result<Vec<Vec<Change>>, StoreError> {
    let Some(bytes) = read_state_file(dir)? else { return Ok(Vec::new()) };
    Journal::new(dir).read(Base::of(&bytes))
}

/// The state file's `bytes` decoded, with the changes `journal` holds on top of it replayed.
fn replayed(bytes: &[u8], path: &Path, journal: &mut Journal) -> Result<State, StoreError> {
    let mut state = decode(bytes, path)?;
    for change in journal.read(Base::of(bytes))?.into_iter().flatten() {
        state.apply(change);
    }
    Ok(state)
}

/// The state file's bytes, or `None` on a first start.
fn read_state_file(dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let path = dir.join("state");
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A missing state beside an existing previous one is not a first start.
            if dir.join("state.prev").exists() {
                return Err(StoreError::Io {
                    path,
                    op: "read",
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "missing, but state.prev exists: copy it to state to recover",
                    ),
                });
            }
            Ok(None)
        }
        Err(e) => Err(io(&path, "read")(e)),
    }
}

pub fn encode(state: &State) -> Result<Vec<u8>, bincode::Error> {
    // The body is written in place after a header whose length is filled in afterwards:
    // one pass over the state, no copy of it.
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    options().serialize_into(&mut out, state)?;
    let body_len = (out.len() - HEADER) as u64;
    out[MAGIC.len() + 2..HEADER].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

pub fn decode(bytes: &[u8], path: &Path) -> Result<State, StoreError> {
    let path = path.to_owned();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            let (len, expected) = (bytes.len() as u64, HEADER as u64 + 4);
            return Err(StoreError::Truncated { path, len, expected });
        }
        return Err(StoreError::BadMagic { path });
    }
    if bytes.len() < HEADER {
        let (len, expected) = (bytes.len() as u64, HEADER as u64 + 4);
        return Err(StoreError::Truncated { path, len, expected });
    }
    let version = u16::from_le_bytes([bytes[5], bytes[6]]);
    if version > FORMAT_VERSION {
        return Err(StoreError::NewerFormat { path, found: version, supported: FORMAT_VERSION });
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[7..HEADER]);
    let body_len = u64::from_le_bytes(len_bytes);
    let expected = (HEADER as u64).saturating_add(body_len).saturating_add(4);
    if (bytes.len() as u64) < expected {
        return Err(StoreError::Truncated { path, len: bytes.len() as u64, expected });
    }
    if bytes.len() as u64 != expected {
        return Err(StoreError::Checksum { path });
    }
    let end = bytes.len() - 4;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[end..]);
    if crc32fast::hash(&bytes[..end]) != u32::from_le_bytes(crc) {
        return Err(StoreError::Checksum { path });
    }
    let body = &bytes[HEADER..end];
    let mut state: State = match version {
        1 => options().deserialize(body).map_err(|e| StoreError::Decode {
            path,
            version,
            message: e.to_string(),
        })?,
        // Formats before 1 never existed.
        _ => return Err(StoreError::Decode { path, version, message: "unknown format".into() }),
    };
    state.reindex();
    Ok(state)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests damage and replace the files on purpose
mod tests {
    use super::*;
    use crate::state::*;

    /// A state touching every type, as a format-1 file must keep loading forever.
    pub(crate) fn sample() -> State {
        let mut s = State::default();
        s.feeds.insert(
            "https://blog.example/feed".into(),
            FeedState {
                current_url: "https://blog.example/feed.xml".into(),
                etag: Some("\"abc\"".into()),
                last_modified: Some("Sat, 28 Nov 2026 10:00:00 GMT".into()),
                baseline_taken: true,
                seen_ids: ["guid-1".to_owned(), "guid-2".to_owned()].into(),
                seen_links: ["https://blog.example/1".to_owned()].into(),
                newest_seen: Some(1_790_000_000),
                last_fetch: Some(1_790_000_100),
                last_status: Some("200".into()),
                last_error: None,
                failures: 0,
            },
        );
        let statuses = [
            AnnStatus::Pending,
            AnnStatus::Held { reason: HoldReason::TooMany },
            AnnStatus::Held { reason: HoldReason::TooOld },
            AnnStatus::InFlight { since: 5 },
            AnnStatus::Posted {
                remote_id: "109".into(),
                url: Some("https://m/@b/109".into()),
                at: 6,
            },
            AnnStatus::Failed { error: "http 503".into(), retry_at: Some(7) },
            AnnStatus::Failed { error: "http 422".into(), retry_at: None },
            AnnStatus::Skipped { reason: SkipReason::Baseline },
            AnnStatus::Skipped { reason: SkipReason::Human },
        ];
        for (i, status) in statuses.into_iter().enumerate() {
            let account = format!("acct{i}");
            let article = Article {
                feed: "https://blog.example/feed".into(),
                identity: format!("guid-{i}"),
                link: format!("https://blog.example/{i}"),
                title: format!("Title {i} — ünïcode"),
                summary: "Summary".into(),
                tags: vec!["rust".into()],
                image: Some("https://blog.example/i.png".into()),
                published: Some(1_790_000_000 + i as i64),
                first_seen: 1_790_000_050,
                announcements: [(
                    account.clone(),
                    Announcement {
                        key: announcement_key(&account, "f", &i.to_string()),
                        status,
                        text: Some("Title https://blog.example/1".into()),
                        attempts: i as u32,
                        in_doubt: i % 2 == 0,
                    },
                )]
                .into(),
            };
            s.articles.insert(i as u64 + 1, article);
        }
        s.next_article = 9;
        s.accounts.insert(
            "masto".into(),
            AccountState {
                cursors: [("notifications".to_owned(), "1234".to_owned())].into(),
                data: [("account_id".to_owned(), "42".to_owned())].into(),
            },
        );
        for (i, status) in [
            ConvStatus::Open,
            ConvStatus::Snoozed { until: 1_790_100_000 },
            ConvStatus::Done { at: 1_790_000_500 },
        ]
        .into_iter()
        .enumerate()
        {
            s.conversations.insert(
                i as u64 + 1,
                Conversation {
                    account: "masto".into(),
                    thread: format!("thread-{i}"),
                    status,
                    messages: vec![
                        Message {
                            remote_id: format!("m{i}"),
                            author: "alice@example.social".into(),
                            display_name: "Alice".into(),
                            text: "Hello!\nNice post.".into(),
                            at: 1_790_000_200,
                            url: Some("https://example.social/@alice/1".into()),
                            visibility: Some("public".into()),
                            in_reply_to: Some(format!("thread-{i}")),
                            answer: None,
                        },
                        Message {
                            remote_id: if i == 0 { String::new() } else { format!("a{i}") },
                            author: "blogger".into(),
                            display_name: String::new(),
                            text: "Thank you!".into(),
                            at: 1_790_000_300,
                            url: None,
                            visibility: None,
                            in_reply_to: Some(format!("m{i}")),
                            answer: Some(Answer {
                                key: format!("k{i}"),
                                status: if i == 0 {
                                    AnnStatus::InFlight { since: 1_790_000_300 }
                                } else {
                                    AnnStatus::Posted {
                                        remote_id: format!("a{i}"),
                                        url: None,
                                        at: 1,
                                    }
                                },
                                to: "alice@example.social".into(),
                                attempts: 1,
                                in_doubt: false,
                            }),
                        },
                    ],
                },
            );
        }
        s.next_conversation = 3;
        s.reindex();
        s
    }

    const GOLDEN_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/state-v1.bin");

    /// The checked-in format-1 file must load, now and after every future change of the
    /// state types (through a migration then). Regenerate only for a brand-new format, with
    /// PRESENCE_BLESS=1, and keep the old file.
    #[test]
    fn golden_v1_state_file_keeps_loading() {
        if std::env::var_os("PRESENCE_BLESS").is_some() {
            let dir = Path::new(GOLDEN_V1).parent().unwrap();
            fs::create_dir_all(dir).unwrap();
            let mut f = File::create(GOLDEN_V1).unwrap();
            f.write_all(&encode(&sample()).unwrap()).unwrap();
        }
        let bytes = fs::read(GOLDEN_V1).unwrap();
        assert_eq!(decode(&bytes, Path::new(GOLDEN_V1)).unwrap(), sample());
    }

    #[test]
    fn save_then_load_round_trips_and_keeps_prev() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut s = sample();
        store.save(&s).unwrap();
        s.next_article = 100;
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), Some(s));
        let prev = fs::read(dir.path().join("state.prev")).unwrap();
        assert_eq!(decode(&prev, Path::new("p")).unwrap().next_article, 9);
        assert!(!dir.path().join("state.tmp").exists());
    }

    #[test]
    fn a_state_changed_behind_our_back_never_becomes_prev() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = sample();
        store.save(&s).unwrap();
        store.save(&s).unwrap();
        // Someone truncates the file in place (same inode).
        let path = dir.path().join("state");
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
        s.next_article = 100;
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), Some(s.clone()));
        let prev = |dir: &Path| decode(&fs::read(dir.join("state.prev")).unwrap(), dir);
        assert_eq!(prev(dir.path()).unwrap().next_article, 9, "the last good file stays");
        // The file written since is ours again: the next save keeps it as the previous one.
        store.save(&s).unwrap();
        assert_eq!(prev(dir.path()).unwrap().next_article, 100);
    }

    #[test]
    fn a_second_store_on_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Locked { .. })));
    }

    #[test]
    fn damage_is_named_never_reset() {
        let good = encode(&sample()).unwrap();
        let p = Path::new("/x/state");
        let err = |b: &[u8]| decode(b, p).unwrap_err().to_string();
        assert!(err(&good[..good.len() - 10]).contains("/x/state: truncated"));
        assert!(err(&good[..3]).contains("truncated"));
        assert!(err(b"").contains("truncated"));
        assert!(err(b"hello world, not a state").contains("bad magic"));
        let mut flipped = good.clone();
        flipped[40] ^= 0x01;
        assert!(err(&flipped).contains("checksum mismatch"));
        let mut newer = good.clone();
        newer[5] = 2;
        assert!(err(&newer).contains("written by a newer presenced (format 2"));
        let mut longer = good.clone();
        longer.push(0);
        assert!(err(&longer).contains("checksum"));
        // A huge claimed length must not allocate: it is simply truncated.
        let mut huge = good[..HEADER].to_vec();
        huge[7..15].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&huge).contains("truncated"));
    }

    /// Steps on the golden state: article 1 (acct0) goes in flight, article 4 (acct3, in
    /// flight) is posted, article 1 fails.
    fn steps() -> Vec<Vec<Change>> {
        let begin = Change::Begin { article: 1, account: "acct0".into(), text: "T".into(), at: 10 };
        let posted = Outcome::Posted { remote_id: "r4".into(), url: Some("https://r/4".into()) };
        let retry = Outcome::Retry { error: "http 503".into(), after: Some(60), in_doubt: true };
        vec![
            vec![begin],
            vec![
                Change::Finish { article: 4, account: "acct3".into(), outcome: posted, at: 11 },
                Change::Finish { article: 1, account: "acct0".into(), outcome: retry, at: 12 },
            ],
        ]
    }

    fn applied(mut s: State, records: &[Vec<Change>]) -> State {
        for change in records.iter().flatten() {
            s.apply(change.clone());
        }
        s
    }

    fn reopen(dir: &Path) -> Result<Option<State>, StoreError> {
        Store::open(dir)?.load()
    }

    /// A fetch that found article 10 and started announcing it, in one record.
    fn fetch_steps() -> Vec<Vec<Change>> {
        let mut s = sample();
        let feed = "https://blog.example/feed";
        let fs = s.feeds.get_mut(feed).unwrap();
        fs.etag = Some("\"def\"".into());
        fs.last_fetch = Some(1_790_000_700);
        let mut article = s.articles[&1].clone();
        article.identity = "guid-10".into();
        article.announcements.get_mut("acct0").unwrap().status = AnnStatus::Pending;
        s.articles.insert(10, article);
        let fetched = s.fetched(feed, vec!["guid-10".into()], vec!["https://b/10".into()], 9);
        let begin =
            Change::Begin { article: 10, account: "acct0".into(), text: "T".into(), at: 10 };
        vec![vec![fetched, begin]]
    }

    /// The checked-in format-1 journals, on top of the golden format-1 state file, must keep
    /// replaying. Regenerate only for a brand-new format, with PRESENCE_BLESS=1.
    fn golden_journal_keeps_replaying(golden: &str, steps: &[Vec<Change>]) -> State {
        let dir = tempfile::tempdir().unwrap();
        fs::copy(GOLDEN_V1, dir.path().join("state")).unwrap();
        if std::env::var_os("PRESENCE_BLESS").is_some() {
            let store = Store::open(dir.path()).unwrap();
            let s = store.load().unwrap().unwrap();
            for record in steps {
                store.commit(&s, record).unwrap();
            }
            drop(store);
            fs::copy(dir.path().join("state.journal"), golden).unwrap();
        }
        fs::copy(golden, dir.path().join("state.journal")).unwrap();
        let loaded = reopen(dir.path()).unwrap().unwrap();
        assert_eq!(loaded, applied(sample(), steps));
        loaded
    }

    #[test]
    fn golden_v1_journal_keeps_replaying() {
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/journal-v1.bin");
        let loaded = golden_journal_keeps_replaying(golden, &steps());
        let ann = &loaded.articles[&4].announcements["acct3"];
        assert!(matches!(ann.status, AnnStatus::Posted { .. }), "{ann:?}");
    }

    #[test]
    fn golden_v2_journal_with_a_fetch_keeps_replaying() {
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/journal-v2.bin");
        let loaded = golden_journal_keeps_replaying(golden, &fetch_steps());
        let fs = &loaded.feeds["https://blog.example/feed"];
        assert_eq!(fs.etag.as_deref(), Some("\"def\""));
        assert!(fs.seen_ids.contains("guid-10") && fs.seen_ids.contains("guid-1"), "{fs:?}");
        assert_eq!(loaded.next_article, 10);
        let ann = &loaded.articles[&10].announcements["acct0"];
        assert!(matches!(ann.status, AnnStatus::InFlight { .. }), "{ann:?}");
        assert!(loaded.in_flight().contains(&(10, "acct0".to_owned())));
    }

    #[test]
    fn journaled_steps_replay_and_a_full_save_folds_them_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = sample();
        store.save(&s).unwrap();
        let state_file = fs::read(dir.path().join("state")).unwrap();
        for record in steps() {
            s = applied(s, std::slice::from_ref(&record));
            store.commit(&s, &record).unwrap();
        }
        assert_eq!(fs::read(dir.path().join("state")).unwrap(), state_file, "only appended");
        assert_eq!(peek(dir.path()).unwrap(), Some(s.clone()), "seen without the lock");
        drop(store);
        assert_eq!(reopen(dir.path()).unwrap(), Some(s.clone()));

        // A crash after the next full save but before any append leaves the old journal
        // beside the new state file: it is stale and must not be replayed again.
        let journal = fs::read(dir.path().join("state.journal")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.load().unwrap();
        s.next_article = 50;
        store.save(&s).unwrap();
        drop(store);
        fs::write(dir.path().join("state.journal"), &journal).unwrap();
        assert_eq!(reopen(dir.path()).unwrap(), Some(s.clone()));

        // And the next append starts the journal afresh on the new state file.
        let store = Store::open(dir.path()).unwrap();
        store.load().unwrap();
        let begin = Change::Begin { article: 2, account: "acct1".into(), text: "x".into(), at: 1 };
        s.apply(begin.clone());
        store.commit(&s, &[begin]).unwrap();
        drop(store);
        assert_eq!(reopen(dir.path()).unwrap(), Some(s));
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_appending_goes_on_after_the_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = sample();
        store.save(&s).unwrap();
        let records = steps();
        store.commit(&s, &records[0]).unwrap();
        let good = store.journal.borrow().valid().unwrap() as usize;
        store.commit(&s, &records[1]).unwrap();
        let end = store.journal.borrow().valid().unwrap() as usize;
        drop(store);
        let path = dir.path().join("state.journal");
        let full = fs::read(&path).unwrap();
        assert!(full[end..].iter().all(|&b| b == 0) && full.len() > end, "zeros ahead");
        // Cut short (format 1 had no zeros ahead), or cut inside the zeros.
        for cut in [good + 3, end - 8] {
            for zeros in [0, 100] {
                let mut torn = full[..cut].to_vec();
                torn.resize(cut + zeros, 0);
                fs::write(&path, &torn).unwrap();
                assert_eq!(reopen(dir.path()).unwrap(), Some(applied(sample(), &records[..1])));
            }
        }
        // The last record's bytes all there but wrong (its data never reached the disk).
        let mut garbled = full.clone();
        garbled[end - 1] ^= 0xff;
        fs::write(&path, &garbled).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = store.load().unwrap().unwrap();
        assert_eq!(s, applied(sample(), &records[..1]));
        s = applied(s, &records[1..]);
        store.commit(&s, &records[1]).unwrap();
        drop(store);
        assert_eq!(fs::read(&path).unwrap(), full, "the torn record was cut, not kept");
        assert_eq!(reopen(dir.path()).unwrap(), Some(s));
    }

    #[test]
    fn a_damaged_or_newer_journal_stops_the_load_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = sample();
        store.save(&s).unwrap();
        for record in steps() {
            store.commit(&s, &record).unwrap();
        }
        drop(store);
        let path = dir.path().join("state.journal");
        let good = fs::read(&path).unwrap();
        let err = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            reopen(dir.path()).unwrap_err().to_string()
        };
        let mut middle = good.clone();
        middle[journal::HEADER + 9] ^= 0x10;
        let e = err(&middle);
        assert!(e.contains("state.journal") && e.contains("checksum mismatch"), "{e}");
        let mut newer = good.clone();
        newer[5] = 3;
        assert!(err(&newer).contains("state.journal: written by a newer presenced (format 3"));
        let mut after_the_end = good.clone();
        *after_the_end.last_mut().unwrap() = 1;
        let e = err(&after_the_end);
        assert!(e.contains("state.journal") && e.contains("data after the end"), "{e}");
        assert!(err(b"garbage that is not a journal").contains("state.journal: not a presenced"));
    }

    #[test]
    fn a_state_replaced_behind_our_back_is_saved_whole_not_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = sample();
        store.save(&s).unwrap();
        let path = dir.path().join("state");
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
        let record = &steps()[0];
        s = applied(s, std::slice::from_ref(record));
        store.commit(&s, record).unwrap();
        assert_eq!(decode(&fs::read(&path).unwrap(), &path).unwrap(), s, "whole again");
    }

    /// The point of the zeros ahead: appends within them leave the file's size alone, so
    /// their fdatasync has no size to write.
    #[test]
    fn appends_overwrite_the_zeros_ahead_without_growing_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = sample();
        store.save(&s).unwrap();
        let path = dir.path().join("state.journal");
        let text = "x".repeat(1000);
        let record = &vec![Change::Begin { article: 1, account: "acct0".into(), text, at: 10 }];
        store.commit(&s, record).unwrap();
        let len = fs::metadata(&path).unwrap().len();
        assert_eq!(len % journal::CHUNK, 0);
        let mut appended = 1;
        while store.journal.borrow().valid().unwrap() + 1100 < len {
            store.commit(&s, record).unwrap();
            assert_eq!(fs::metadata(&path).unwrap().len(), len, "after {appended} appends");
            appended += 1;
        }
        assert!(appended > 50, "{appended}");
        // Past the zeros, the file grows by another chunk.
        store.commit(&s, record).unwrap();
        store.commit(&s, record).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), len + journal::CHUNK);
        drop(store);
        let replayed = reopen(dir.path()).unwrap().unwrap();
        assert_eq!(replayed, applied(sample(), std::slice::from_ref(record)));
    }

    /// A journal of format 1 (no zeros ahead, no fetch records) replays, and is folded into
    /// the state file by a full save before anything is appended in format 2.
    #[test]
    fn a_format_1_journal_is_folded_in_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        fs::copy(GOLDEN_V1, dir.path().join("state")).unwrap();
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/journal-v1.bin");
        fs::copy(golden, dir.path().join("state.journal")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = store.load().unwrap().unwrap();
        let record =
            vec![Change::Begin { article: 2, account: "acct1".into(), text: "x".into(), at: 1 }];
        s = applied(s, std::slice::from_ref(&record));
        store.commit(&s, &record).unwrap();
        let saved = decode(&fs::read(dir.path().join("state")).unwrap(), dir.path()).unwrap();
        assert_eq!(saved, s, "a full save");
        store.commit(&s, &record).unwrap();
        assert_eq!(fs::read(dir.path().join("state.journal")).unwrap()[5], 2, "format 2");
        drop(store);
        assert_eq!(reopen(dir.path()).unwrap(), Some(s));
    }

    /// A journal that `tamper` changed behind the daemon's back after one append: the next
    /// commit is a full save, and the state loads whole.
    fn a_tampered_journal_is_made_good_by_a_full_save(tamper: impl Fn(&Path)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = sample();
        store.save(&s).unwrap();
        let records = steps();
        s = applied(s, &records[..1]);
        store.commit(&s, &records[0]).unwrap();
        tamper(&dir.path().join("state.journal"));
        s = applied(s, &records[1..]);
        store.commit(&s, &records[1]).unwrap();
        assert_eq!(decode(&fs::read(dir.path().join("state")).unwrap(), dir.path()).unwrap(), s);
        drop(store);
        assert_eq!(reopen(dir.path()).unwrap(), Some(s));
    }

    #[test]
    fn a_journal_replaced_behind_our_back_is_made_good_by_a_full_save() {
        a_tampered_journal_is_made_good_by_a_full_save(|path| {
            let copy = path.with_extension("copy");
            fs::copy(path, &copy).unwrap();
            fs::rename(&copy, path).unwrap();
        });
    }

    #[test]
    fn a_journal_deleted_behind_our_back_is_made_good_by_a_full_save() {
        a_tampered_journal_is_made_good_by_a_full_save(|path| fs::remove_file(path).unwrap());
    }

    #[test]
    fn missing_state_beside_prev_is_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save(&sample()).unwrap();
        store.save(&sample()).unwrap();
        fs::remove_file(dir.path().join("state")).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("state.prev exists"));
    }
}
