//! The outbox "network": appends each announcement as one JSON line to
//! `<state_dir>/outbox.jsonl` instead of posting it. For dry runs, the bundled example and
//! the tests. Like a real network it is idempotent by key: a crash between the append and the
//! state write never gives two lines, and a line torn by a crash is not a post.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{AccountInfo, NetError, Network, Post, Posted};
use crate::fit::Rules;

#[derive(Debug)]
pub struct Outbox {
    account: String,
    path: PathBuf,
    /// Key → line number (1-based) of every complete line.
    keys: HashMap<String, usize>,
    lines: usize,
}

/// One line of outbox.jsonl (contract: field names are documented in README).
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    account: String,
    article_url: String,
    title: String,
    text: String,
    key: String,
    /// RFC 3339.
    at: String,
}

impl Outbox {
    pub fn new(account: &str, path: PathBuf) -> Outbox {
        Outbox { account: account.to_owned(), path, keys: HashMap::new(), lines: 0 }
    }

    fn fail(&self, op: &str, e: impl std::fmt::Display) -> NetError {
        NetError::Transient {
            message: format!("{}: {op}: {e}", self.path.display()),
            retry_after: None,
        }
    }

    /// Reads the keys already posted and cuts off a torn last line.
    fn load(&mut self) -> Result<(), NetError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| self.fail("open", e))?;
        self.keys.clear();
        self.lines = 0;
        let mut good_len = 0u64;
        let mut reader = BufReader::new(&mut file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(|e| self.fail("read", e))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            good_len += n as u64;
            self.lines += 1;
            if let Ok(line) = serde_json::from_slice::<Line>(&buf) {
                self.keys.insert(line.key, self.lines);
            }
        }
        drop(reader);
        if file.metadata().map_err(|e| self.fail("stat", e))?.len() != good_len {
            tracing::warn!(path = %self.path.display(), "cutting a torn last line off the outbox");
            file.set_len(good_len).map_err(|e| self.fail("truncate", e))?;
            file.sync_all().map_err(|e| self.fail("fsync", e))?;
        }
        Ok(())
    }

    fn posted(&self, line: usize) -> Posted {
        Posted { remote_id: format!("line {line}"), url: None }
    }
}

impl Network for Outbox {
    async fn start(&mut self) -> Result<AccountInfo, NetError> {
        self.load()?;
        Ok(AccountInfo {
            rules: Rules::outbox(),
            handle: self.account.clone(),
            mention_interval: None,
            at_once: super::AT_ONCE_CHEAP_RECONCILE,
        })
    }

    async fn post(&mut self, post: &Post) -> Result<Posted, NetError> {
        if let Some(&line) = self.keys.get(&post.key) {
            return Ok(self.posted(line));
        }
        let line = Line {
            account: self.account.clone(),
            article_url: post.url.clone(),
            title: post.title.clone(),
            text: post.text.clone(),
            key: post.key.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| NetError::Rejected(e.to_string()))?;
        bytes.push(b'\n');
        let mut file: File =
            OpenOptions::new().append(true).open(&self.path).map_err(|e| self.fail("open", e))?;
        // One write of the whole line: a crash leaves either nothing or a torn line, and a
        // torn line is cut off by the next load.
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Whatever reached the file is cut off on reload; say so rather than guess.
            let _ = file.seek(SeekFrom::End(0));
            self.load()?;
            return Err(self.fail("append", e));
        }
        self.lines += 1;
        self.keys.insert(post.key.clone(), self.lines);
        Ok(self.posted(self.lines))
    }

    async fn find_post(&mut self, post: &Post) -> Result<Option<Posted>, NetError> {
        self.load()?;
        Ok(self.keys.get(&post.key).map(|&line| self.posted(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(key: &str) -> Post {
        Post {
            article: 1,
            key: key.into(),
            text: "Hello https://b/1".into(),
            title: "Hello".into(),
            url: "https://b/1".into(),
            summary: String::new(),
            image: None,
            in_doubt: false,
        }
    }

    #[tokio::test]
    async fn one_line_per_key_even_across_restarts_and_torn_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let mut o = Outbox::new("dry", path.clone());
        o.start().await.unwrap();
        assert_eq!(o.post(&post("k1")).await.unwrap().remote_id, "line 1");
        assert_eq!(o.post(&post("k1")).await.unwrap().remote_id, "line 1");
        // A crash mid-append leaves a torn line; a restarted outbox cuts it off.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"account\":\"dry\",\"key\":\"k2").unwrap();
        let mut o = Outbox::new("dry", path.clone());
        o.start().await.unwrap();
        assert_eq!(o.find_post(&post("k2")).await.unwrap(), None);
        assert!(o.find_post(&post("k1")).await.unwrap().is_some());
        assert_eq!(o.post(&post("k2")).await.unwrap().remote_id, "line 2");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["account"], "dry");
        assert_eq!(line["article_url"], "https://b/1");
        assert_eq!(line["key"], "k1");
    }
}
