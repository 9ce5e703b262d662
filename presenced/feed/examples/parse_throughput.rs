//! Parse throughput of `presence_feed::parse`, for `presence-bench-peers` (tests/bench-peers):
//! `parse_throughput FILE N` parses FILE N times (after one warm-up) and prints
//! `items=<per parse> seconds=<total>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&args[1]).expect("feed file");
    let n: u32 = args[2].parse().expect("N");
    let url = url::Url::parse("http://127.0.0.1/feed.xml").unwrap();
    let ct = Some("application/rss+xml; charset=utf-8");
    let items = presence_feed::parse(&bytes, &url, ct).expect("parses").items.len();
    let t = Instant::now();
    let mut total = 0usize;
    for _ in 0..n {
        total += std::hint::black_box(presence_feed::parse(&bytes, &url, ct).unwrap()).items.len();
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(total, items * n as usize);
    println!("items={items} seconds={secs:.6}");
}
