//! A blog's web server, for the feed tests: serves one feed over real HTTP/1.1 on
//! 127.0.0.1 with a strong ETag and Last-Modified, answers conditional requests with 304 as
//! a real server does, and can be told to fail (status and Retry-After). It counts the
//! requests and the 304s so tests can check conditional GET.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct Shared {
    body: String,
    version: u64,
    fail: Option<(u16, Option<u64>)>,
    /// Requests for /feed.xml are redirected there with this status (the feed moved).
    moved: Option<(u16, String)>,
    /// Paths asked for, in order.
    paths: Vec<String>,
    requests: u64,
    not_modified: u64,
    full: u64,
}

/// The server; it stops when dropped (its thread ends with the process otherwise).
#[derive(Debug, Clone)]
pub struct FeedServer {
    shared: Arc<Mutex<Shared>>,
    pub url: String,
}

impl FeedServer {
    pub fn start(body: &str) -> FeedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind feed server");
        let url = format!("http://{}/feed.xml", listener.local_addr().expect("addr"));
        let shared =
            Arc::new(Mutex::new(Shared { body: body.to_owned(), version: 1, ..Shared::default() }));
        let state = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        FeedServer { shared, url }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a new version of the feed (new ETag).
    pub fn set_body(&self, body: &str) {
        let mut s = self.lock();
        s.body = body.to_owned();
        s.version += 1;
    }

    /// Makes every request fail with `status` (and Retry-After seconds), or heals with None.
    /// Moves the feed: /feed.xml answers `status` (301, 302, 308) with a Location to `path`,
    /// where the feed is served; None serves it at /feed.xml again.
    pub fn move_to(&self, moved: Option<(u16, &str)>) {
        self.lock().moved = moved.map(|(status, path)| (status, path.to_owned()));
    }

    /// The paths asked for so far.
    pub fn paths(&self) -> Vec<String> {
        self.lock().paths.clone()
    }

    pub fn fail_with(&self, failure: Option<(u16, Option<u64>)>) {
        self.lock().fail = failure;
    }

    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    pub fn not_modified(&self) -> u64 {
        self.lock().not_modified
    }

    pub fn full_responses(&self) -> u64 {
        self.lock().full
    }
}

fn serve(stream: TcpStream, shared: &Mutex<Shared>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut if_none_match = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("if-none-match") {
                    if_none_match = Some(value.trim().to_owned());
                }
            }
        }
        let response = {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            s.requests += 1;
            let etag = format!("\"v{}\"", s.version);
            let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            s.paths.push(path.clone());
            let moved = s.moved.clone().filter(|_| path == "/feed.xml");
            if let Some((status, to)) = moved {
                format!("HTTP/1.1 {status} Moved\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
            } else if let Some((status, retry_after)) = s.fail {
                let retry =
                    retry_after.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
                format!(
                    "HTTP/1.1 {status} Failing\r\n{retry}Content-Length: 4\r\nContent-Type: text/plain\r\n\r\nfail"
                )
            } else if if_none_match.as_deref() == Some(etag.as_str()) {
                s.not_modified += 1;
                format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n")
            } else {
                s.full += 1;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml; charset=utf-8\r\n\
                     ETag: {etag}\r\nLast-Modified: Sat, 28 Nov 2026 10:00:00 GMT\r\n\
                     Content-Length: {}\r\n\r\n{}",
                    s.body.len(),
                    s.body
                )
            }
        };
        writer.write_all(response.as_bytes())?;
        writer.flush()?;
    }
}

/// One article: (guid, link, title, pubDate unix seconds).
pub type Item = (String, String, String, i64);

/// 2026-11-28 10:00 UTC, when the test blogs publish their first article.
pub const T0: i64 = 1_795_860_000;

/// Article `n` of the test blog, published `n` hours after [`T0`].
pub fn article(n: i64) -> Item {
    (
        format!("https://blog.test/?p={n}"),
        format!("https://blog.test/{n}/"),
        format!("Post number {n}"),
        T0 + n * 3600,
    )
}

/// The test blog's articles in `range`, newest first as blogs list them.
pub fn blog(range: std::ops::RangeInclusive<i64>) -> Vec<Item> {
    let mut items: Vec<Item> = range.map(article).collect();
    items.reverse();
    items
}

/// An RSS 2.0 feed of `items`: (guid, link, title, pubDate unix seconds), newest first as
/// blogs publish them.
pub fn rss(items: &[(String, String, String, i64)]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Test blog</title><link>https://blog.test/</link><description>t</description>\n",
    );
    for (guid, link, title, date) in items {
        let date = chrono_rfc2822(*date);
        out.push_str(&format!(
            "<item><title>{title}</title><link>{link}</link><guid>{guid}</guid>\
             <pubDate>{date}</pubDate><description>About {title}.</description></item>\n"
        ));
    }
    out.push_str("</channel></rss>\n");
    out
}

/// RFC 2822 date without pulling a date crate into the tests.
fn chrono_rfc2822(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc2822_dates() {
        assert_eq!(super::chrono_rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(super::chrono_rfc2822(1_795_860_000), "Sat, 28 Nov 2026 10:00:00 +0000");
    }
}
