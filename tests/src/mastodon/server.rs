//! The HTTP side of the emulator: hyper on a tokio listener, routing, Rails-like parameter
//! handling, rate limiting, faults and SSE streams.

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::{lock, text, Fault, NewStatus, RateInfo, RecordedRequest, State, StreamCmd, StreamReg};

type Body = BoxBody<Bytes, io::Error>;

/// Accepts connections until `stop` changes.
pub(super) async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// One request, with its parameters merged as Rails merges them (query, then body).
#[derive(Debug)]
struct Call {
    method: String,
    /// The path without a trailing slash (Rails ignores it).
    path: String,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    /// From `Authorization: Bearer` or the `access_token` parameter.
    token: Option<String>,
}

impl Call {
    /// The first value of a scalar parameter.
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A parameter that is present and not blank (`params[:x].present?`).
    fn present(&self, name: &str) -> Option<&str> {
        self.param(name).filter(|v| !text::is_blank(v))
    }

    /// The values of an array parameter (`name[]=`; a bare `name=` counts too).
    fn list(&self, name: &str) -> Vec<&str> {
        let array = format!("{name}[]");
        self.params
            .iter()
            .filter(|(k, _)| k == name || *k == array)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A response before it becomes a hyper one.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

const JSON: &str = "application/json; charset=utf-8";

fn json_reply(status: u16, v: &Value) -> Reply {
    Reply { status, content_type: JSON, headers: Vec::new(), body: v.to_string().into_bytes() }
}

fn error(status: u16, message: &str) -> Reply {
    json_reply(status, &json!({ "error": message }))
}

/// Doorkeeper's answer to a missing, unknown or revoked token.
fn unauthorized() -> Reply {
    let mut r = error(401, "The access token is invalid");
    r.headers.push((
        "www-authenticate",
        "Bearer realm=\"Doorkeeper\", error=\"invalid_token\", \
         error_description=\"The access token is invalid\""
            .into(),
    ));
    r
}

fn record_not_found() -> Reply {
    error(404, "Record not found")
}

/// Rack::Attack's throttled response.
fn too_many(limit: u32, reset: String) -> Reply {
    let mut r = error(429, "Too many requests");
    r.headers.push(("x-ratelimit-limit", limit.to_string()));
    r.headers.push(("x-ratelimit-remaining", "0".into()));
    r.headers.push(("x-ratelimit-reset", reset));
    r
}

/// The bodies Mastodon (Rails, or its error handling) sends for server-side failures.
fn server_error(status: u16) -> Reply {
    match status {
        500 => json_reply(500, &json!({"status": 500, "error": "Internal Server Error"})),
        502 => error(502, "Bad Gateway"),
        503 => error(503, "There was a temporary problem serving your request, please try again"),
        504 => error(504, "Gateway Timeout"),
        429 => error(429, "Too many requests"),
        404 => record_not_found(),
        401 => unauthorized(),
        other => error(other, "Error"),
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never: Infallible| match never {}).boxed()
}

fn http_date(s: &State) -> String {
    s.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn to_response(reply: Reply, date: &str) -> Response<Body> {
    let mut builder = Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type)
        .header("date", date);
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(full(reply.body)).unwrap_or_else(|_| {
        let mut r = Response::new(full("{\"error\":\"emulator: bad response\"}"));
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// Records the answer's status and turns the reply into a response.
fn finish(state: &Mutex<State>, index: usize, reply: Reply) -> Response<Body> {
    let mut s = lock(state);
    if let Some(r) = s.requests.get_mut(index) {
        r.status = Some(reply.status);
    }
    let date = http_date(&s);
    to_response(reply, &date)
}

fn decode_params(query: &str, content_type: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    if content_type.starts_with("application/json") {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in map {
                let scalar = |v: &Value| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                };
                match &v {
                    Value::Array(items) => {
                        params.extend(items.iter().filter_map(scalar).map(|i| (k.clone(), i)))
                    }
                    other => params.extend(scalar(other).map(|i| (k.clone(), i))),
                }
            }
        }
    } else if !content_type.starts_with("multipart/") {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    }
    params
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, 1 << 20).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let method = parts.method.as_str().to_owned();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let raw_path = parts.uri.path();
    let path = match raw_path.trim_end_matches('/') {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    let content_type =
        parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let params = decode_params(parts.uri.query().unwrap_or_default(), content_type, &body);
    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .or_else(|| params.iter().find(|(k, _)| k == "access_token").map(|(_, v)| v.clone()));
    let call = Call { method, path, params, headers: parts.headers, token };

    let (index, fault) = {
        let mut s = lock(&state);
        s.requests.push(RecordedRequest {
            method: call.method.clone(),
            path_and_query,
            headers: call
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: None,
        });
        let index = s.requests.len() - 1;
        let fault = s.take_fault(&call.method, &call.path);
        (index, fault)
    };

    // Faults that stand in front of the application.
    match fault {
        Some(Fault::Status(code)) => return Ok(finish(&state, index, server_error(code))),
        Some(Fault::TooManyRequests) => {
            let (limit, reset) = {
                let s = lock(&state);
                (s.config.rate_limit, s.rate_reset())
            };
            return Ok(finish(&state, index, too_many(limit, reset)));
        }
        Some(Fault::WrongContentType) => {
            let page = "<!DOCTYPE html>\n<html><head><title>We&#39;ll be right back</title></head>\
                        <body><h1>Down for maintenance</h1></body></html>\n";
            let reply = Reply {
                status: 200,
                content_type: "text/html; charset=utf-8",
                headers: Vec::new(),
                body: page.as_bytes().to_vec(),
            };
            return Ok(finish(&state, index, reply));
        }
        _ => {}
    }

    if call.path.starts_with("/api/v1/streaming") {
        return match fault {
            Some(Fault::DropAfterCreate) => Err(io::Error::other("emulator: connection dropped")),
            Some(Fault::Garbage) => {
                let reply = Reply {
                    status: 200,
                    content_type: "text/event-stream",
                    headers: Vec::new(),
                    body: b":)\nevent: notification\ndata: {\"id\":\"".to_vec(),
                };
                Ok(finish(&state, index, reply))
            }
            other => {
                if let Some(Fault::Slow(delay)) = other {
                    tokio::time::sleep(delay).await;
                }
                Ok(streaming(&state, index, &call))
            }
        };
    }

    let reply = {
        let mut s = lock(&state);
        api(&mut s, &call)
    };
    match fault {
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::DropAfterCreate) => {
            return Err(io::Error::other("emulator: connection dropped"))
        }
        Some(Fault::Garbage) => {
            let mut reply = reply;
            let cut = reply.body.len() / 2;
            reply.body.truncate(cut.max(1));
            reply.status = 200;
            return Ok(finish(&state, index, reply));
        }
        _ => {}
    }
    Ok(finish(&state, index, reply))
}

/// The Rails application: rate limiting, authentication, routing.
fn api(s: &mut State, c: &Call) -> Reply {
    let segments: Vec<&str> = c.path.trim_start_matches('/').split('/').collect();
    let is_instance = matches!(segments[..], ["api", "v1" | "v2", "instance"]);
    let viewer = c.token.as_deref().and_then(|t| s.account_by_token(t));
    // Rack::Attack counts authenticated requests per account, the others per address.
    let bucket = viewer.map_or_else(|| "ip:127.0.0.1".to_owned(), |id| format!("account:{id}"));
    let rate = s.rate_hit(&bucket);
    if rate.exceeded {
        return too_many(rate.limit, rate.reset);
    }
    let mut reply = route(s, c, &segments, viewer, is_instance);
    add_rate_headers(&mut reply, &rate);
    reply
}

fn add_rate_headers(reply: &mut Reply, rate: &RateInfo) {
    reply.headers.push(("x-ratelimit-limit", rate.limit.to_string()));
    reply.headers.push(("x-ratelimit-remaining", rate.remaining.to_string()));
    reply.headers.push(("x-ratelimit-reset", rate.reset.clone()));
}

fn route(
    s: &mut State,
    c: &Call,
    segments: &[&str],
    viewer: Option<u64>,
    is_instance: bool,
) -> Reply {
    // A token that is sent must be valid wherever Doorkeeper looks at it.
    if c.token.is_some() && viewer.is_none() && !is_instance {
        return unauthorized();
    }
    match (c.method.as_str(), segments) {
        ("GET", ["api", "v1", "instance"]) => json_reply(200, &instance_v1(s)),
        ("GET", ["api", "v2", "instance"]) if s.config.v2_instance => {
            json_reply(200, &instance_v2(s))
        }
        ("GET", ["api", "v1", "accounts", "verify_credentials"]) => match viewer {
            Some(v) => json_reply(200, &s.account_json(v, true)),
            None => unauthorized(),
        },
        ("GET", ["api", "v1", "accounts", id]) => {
            match parse_id(id).filter(|i| s.accounts.contains_key(i)) {
                Some(id) => json_reply(200, &s.account_json(id, false)),
                None => record_not_found(),
            }
        }
        ("GET", ["api", "v1", "accounts", id, "statuses"]) => account_statuses(s, c, id, viewer),
        ("POST", ["api", "v1", "statuses"]) => match viewer {
            Some(v) => create_status(s, c, v),
            None => unauthorized(),
        },
        ("GET", ["api", "v1", "statuses", id]) => match visible_status(s, id, viewer) {
            Some(id) => json_reply(200, &s.status_json(id, viewer)),
            None => record_not_found(),
        },
        ("GET", ["api", "v1", "statuses", id, "context"]) => match visible_status(s, id, viewer) {
            Some(id) => context(s, id, viewer),
            None => record_not_found(),
        },
        ("GET", ["api", "v1", "statuses", id, "source"]) => match viewer {
            Some(v) => match parse_id(id).and_then(|i| s.statuses.get(&i)) {
                Some(st) if st.account_id == v => json_reply(
                    200,
                    &json!({"id": st.id.to_string(), "text": st.text, "spoiler_text": st.spoiler_text}),
                ),
                _ => record_not_found(),
            },
            None => unauthorized(),
        },
        ("GET", ["api", "v1", "notifications"]) => match viewer {
            Some(v) => notifications(s, c, v),
            None => unauthorized(),
        },
        ("GET", ["api", "v1", "notifications", id]) => match viewer {
            Some(v) => match parse_id(id).and_then(|i| s.notifications.get(&i)) {
                Some(n) if n.account_id == v => json_reply(200, &s.notification_json(n.id)),
                _ => record_not_found(),
            },
            None => unauthorized(),
        },
        // Unmatched routes (and a v2 instance on an older server).
        _ => error(404, "Not Found"),
    }
}

fn parse_id(id: &str) -> Option<u64> {
    id.parse().ok()
}

fn visible_status(s: &State, id: &str, viewer: Option<u64>) -> Option<u64> {
    let st = s.statuses.get(&parse_id(id)?)?;
    s.visible(st, viewer).then_some(st.id)
}

/// Ruby's `String#to_i`: leading whitespace, optional sign, leading digits; 0 otherwise.
fn ruby_to_i(v: &str) -> i64 {
    let v = v.trim_start();
    let (sign, digits) = match v.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, v.strip_prefix('+').unwrap_or(v)),
    };
    let digits: String = digits.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<i64>().map_or(0, |n| sign * n)
}

/// `limit_param(default)`: the default when absent, else |limit| capped at twice the default.
fn limit_param(c: &Call, default: usize) -> usize {
    match c.param("limit") {
        None => default,
        Some(v) => (ruby_to_i(v).unsigned_abs() as usize).min(default * 2),
    }
}

/// A cursor parameter as ActiveRecord compares it (blank: absent; junk: 0).
fn cursor(c: &Call, name: &str) -> Option<u64> {
    c.present(name).map(|v| ruby_to_i(v).max(0) as u64)
}

/// ActiveModel's boolean cast of a parameter (absent or blank: false).
fn truthy(c: &Call, name: &str) -> bool {
    c.present(name)
        .is_some_and(|v| !matches!(v, "0" | "f" | "F" | "false" | "FALSE" | "off" | "OFF"))
}

/// `to_a_paginated_by_id`: `ids` in ascending order → the page, newest first.
fn paginate(ids: &[u64], limit: usize, c: &Call) -> Vec<u64> {
    let max_id = cursor(c, "max_id");
    let since_id = cursor(c, "since_id");
    let below_max = |i: u64| max_id.map_or(true, |m| i < m);
    if let Some(min_id) = cursor(c, "min_id") {
        let mut page: Vec<u64> =
            ids.iter().copied().filter(|&i| i > min_id && below_max(i)).take(limit).collect();
        page.reverse();
        page
    } else {
        ids.iter()
            .rev()
            .copied()
            .filter(|&i| below_max(i) && since_id.map_or(true, |m| i > m))
            .take(limit)
            .collect()
    }
}

/// Ruby's `CGI.escape`.
fn cgi_escape(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A URL as Rails' url helpers build it: `Hash#to_query`, whose items are sorted.
fn rails_url(
    base: &str,
    path: &str,
    scalars: &[(&str, String)],
    arrays: &[(&str, Vec<&str>)],
) -> String {
    let mut items: Vec<String> =
        scalars.iter().map(|(k, v)| format!("{}={}", cgi_escape(k), cgi_escape(v))).collect();
    for (k, values) in arrays {
        if values.is_empty() {
            continue;
        }
        let key = cgi_escape(&format!("{k}[]"));
        items.push(
            values.iter().map(|v| format!("{key}={}", cgi_escape(v))).collect::<Vec<_>>().join("&"),
        );
    }
    items.sort();
    format!("{base}{path}?{}", items.join("&"))
}

fn set_link(reply: &mut Reply, next: Option<String>, prev: Option<String>) {
    let mut links = Vec::new();
    if let Some(n) = next {
        links.push(format!("<{n}>; rel=\"next\""));
    }
    if let Some(p) = prev {
        links.push(format!("<{p}>; rel=\"prev\""));
    }
    if !links.is_empty() {
        reply.headers.push(("link", links.join(", ")));
    }
}

fn notifications(s: &State, c: &Call, viewer: u64) -> Reply {
    let types = c.list("types");
    let exclude_types = c.list("exclude_types");
    let from_account = c.present("account_id").and_then(parse_id);
    let ids: Vec<u64> = s
        .notifications
        .values()
        .filter(|n| n.account_id == viewer)
        .filter(|_| types.is_empty() || types.contains(&"mention"))
        .filter(|_| !exclude_types.contains(&"mention"))
        .filter(|n| from_account.map_or(true, |a| n.from_account_id == a))
        .map(|n| n.id)
        .collect();
    let page = paginate(&ids, limit_param(c, 40), c);
    let body: Vec<Value> = page.iter().map(|id| s.notification_json(*id)).collect();
    let mut reply = json_reply(200, &Value::Array(body));
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        let mut kept: Vec<(&str, String)> = Vec::new();
        for name in ["limit", "account_id", "include_filtered"] {
            if let Some(v) = c.param(name) {
                kept.push((name, v.to_owned()));
            }
        }
        let arrays = [("types", types.clone()), ("exclude_types", exclude_types.clone())];
        let url = |core: (&'static str, u64)| {
            let mut scalars = kept.clone();
            scalars.push((core.0, core.1.to_string()));
            rails_url(&s.base, "/api/v1/notifications", &scalars, &arrays)
        };
        set_link(&mut reply, Some(url(("max_id", *last))), Some(url(("min_id", *first))));
    }
    reply
}

fn account_statuses(s: &State, c: &Call, id: &str, viewer: Option<u64>) -> Reply {
    let Some(account) = parse_id(id).filter(|i| s.accounts.contains_key(i)) else {
        return record_not_found();
    };
    let exclude_replies = truthy(c, "exclude_replies");
    let only_media = truthy(c, "only_media");
    let pinned = truthy(c, "pinned");
    let tagged = c.present("tagged").map(str::to_lowercase);
    let ids: Vec<u64> = s
        .statuses
        .values()
        .filter(|st| st.account_id == account)
        .filter(|st| {
            viewer == Some(account) || matches!(st.visibility.as_str(), "public" | "unlisted")
        })
        // Status.without_replies keeps self-replies (threads).
        .filter(|st| {
            !exclude_replies
                || st.in_reply_to_id.is_none()
                || st.in_reply_to_account_id == Some(account)
        })
        // No media and no pins are emulated.
        .filter(|_| !only_media && !pinned)
        .filter(|st| tagged.as_ref().map_or(true, |t| st.tags.contains(t)))
        .map(|st| st.id)
        .collect();
    let limit = limit_param(c, 20);
    let page = paginate(&ids, limit, c);
    let body: Vec<Value> = page.iter().map(|id| s.status_json(*id, viewer)).collect();
    let mut reply = json_reply(200, &Value::Array(body));
    let mut kept: Vec<(&str, String)> = Vec::new();
    for name in ["limit", "only_media", "exclude_replies"] {
        if let Some(v) = c.param(name) {
            kept.push((name, v.to_owned()));
        }
    }
    let path = format!("/api/v1/accounts/{account}/statuses");
    let url = |core: (&'static str, u64)| {
        let mut scalars = kept.clone();
        scalars.push((core.0, core.1.to_string()));
        rails_url(&s.base, &path, &scalars, &[])
    };
    let next = page.last().filter(|_| page.len() == limit).map(|last| url(("max_id", *last)));
    let prev = page.first().map(|first| url(("min_id", *first)));
    set_link(&mut reply, next, prev);
    reply
}

/// Thread context: ancestors oldest first; descendants depth first with children in id
/// order, then the author's self-replies promoted ahead of the others (`promote_by!`).
fn context(s: &State, id: u64, viewer: Option<u64>) -> Reply {
    const CONTEXT_LIMIT: usize = 4096;
    let mut ancestors = Vec::new();
    let mut cursor = s.statuses.get(&id).and_then(|st| st.in_reply_to_id);
    while let Some(parent) = cursor.and_then(|p| s.statuses.get(&p)) {
        if s.visible(parent, viewer) {
            ancestors.push(parent.id);
        }
        if ancestors.len() >= CONTEXT_LIMIT {
            break;
        }
        cursor = parent.in_reply_to_id;
    }
    ancestors.reverse();

    let mut descendants: Vec<u64> = Vec::new();
    let mut stack: Vec<u64> = children(s, id).into_iter().rev().collect();
    while let Some(next) = stack.pop() {
        descendants.push(next);
        stack.extend(children(s, next).into_iter().rev());
    }
    let mut descendants: Vec<u64> = descendants
        .into_iter()
        .filter(|d| s.statuses.get(d).is_some_and(|st| s.visible(st, viewer)))
        .take(CONTEXT_LIMIT)
        .collect();
    let self_reply = |d: &u64| {
        s.statuses.get(d).is_some_and(|st| st.in_reply_to_account_id == Some(st.account_id))
    };
    if let Some(mut insert_at) = descendants.iter().position(|d| !self_reply(d)) {
        for index in insert_at + 1..descendants.len() {
            if self_reply(&descendants[index]) {
                let item = descendants.remove(index);
                descendants.insert(insert_at, item);
                insert_at += 1;
            }
        }
    }
    let render =
        |ids: &[u64]| -> Vec<Value> { ids.iter().map(|i| s.status_json(*i, viewer)).collect() };
    json_reply(200, &json!({"ancestors": render(&ancestors), "descendants": render(&descendants)}))
}

fn children(s: &State, id: u64) -> Vec<u64> {
    s.statuses.values().filter(|st| st.in_reply_to_id == Some(id)).map(|st| st.id).collect()
}

/// `POST /api/v1/statuses`, in the order Mastodon checks things: the thread (404), the
/// idempotency key (the first status, 200), then validation (422), then the create.
fn create_status(s: &mut State, c: &Call, author: u64) -> Reply {
    let in_reply_to = match c.present("in_reply_to_id") {
        None => None,
        Some(id) => match visible_status(s, id, Some(author)) {
            Some(id) => Some(id),
            None => {
                return error(404, "The post you are trying to reply to does not appear to exist.")
            }
        },
    };
    let key = c.header("idempotency-key").filter(|k| !k.is_empty()).map(str::to_owned);
    if let Some(key) = &key {
        let now = s.now();
        s.idempotency.retain(|_, (_, expires)| *expires > now);
        if let Some((id, _)) = s.idempotency.get(&(author, key.clone())) {
            let id = *id;
            return json_reply(200, &s.status_json(id, Some(author)));
        }
    }
    let media = c.list("media_ids");
    if !media.is_empty() {
        return error(
            422,
            &format!(
                "Validation failed: media {} not found (no media in the emulator)",
                media.join(", ")
            ),
        );
    }
    if c.present("scheduled_at").is_some() || c.params.iter().any(|(k, _)| k.starts_with("poll")) {
        return error(422, "Validation failed: scheduled statuses and polls are not emulated");
    }
    let status_text = c.param("status").unwrap_or_default();
    let spoiler_text = c.param("spoiler_text").unwrap_or_default();
    let visibility = c.present("visibility").unwrap_or("public");
    if !matches!(visibility, "public" | "unlisted" | "private" | "direct") {
        return error(422, "Validation failed: Visibility is not included in the list");
    }
    if text::is_blank(status_text) {
        return error(422, "Validation failed: Text can't be blank");
    }
    let max = s.config.max_characters;
    if text::countable_length(status_text, spoiler_text) > max {
        return error(422, &format!("Validation failed: Text character limit of {max} exceeded"));
    }
    let language = c
        .present("language")
        .filter(|l| (2..=3).contains(&l.len()) && l.chars().all(|ch| ch.is_ascii_lowercase()))
        .unwrap_or("en")
        .to_owned();
    let id = s.create_status(NewStatus {
        author,
        text: status_text,
        spoiler_text,
        visibility,
        language: Some(language),
        sensitive: truthy(c, "sensitive"),
        in_reply_to,
        extra_mentions: Vec::new(),
        via_api: true,
    });
    if let Some(key) = key {
        let expires = s.now()
            + chrono::Duration::from_std(super::IDEMPOTENCY_TTL)
                .unwrap_or_else(|_| chrono::Duration::hours(1));
        s.idempotency.insert((author, key), (id, expires));
    }
    json_reply(200, &s.status_json(id, Some(author)))
}

fn instance_v1(s: &State) -> Value {
    let host = s.base.trim_start_matches("http://");
    let streaming = s.base.replacen("http://", "ws://", 1);
    let max = s.config.max_characters;
    json!({
        "uri": host,
        "title": "Mastodon emulator",
        "short_description": "A test server",
        "description": "A test server",
        "email": "admin@example.invalid",
        "version": "4.3.0",
        "urls": { "streaming_api": streaming },
        "stats": {
            "user_count": s.accounts.values().filter(|a| a.domain.is_none()).count(),
            "status_count": s.statuses.len(),
            "domain_count": 1,
        },
        "thumbnail": null,
        "languages": ["en"],
        "registrations": false,
        "approval_required": false,
        "invites_enabled": false,
        // Glitch/Pleroma-style field some clients read.
        "max_toot_chars": max,
        "configuration": {
            "accounts": { "max_featured_tags": 10 },
            "statuses": {
                "max_characters": max,
                "max_media_attachments": 4,
                "characters_reserved_per_url": text::URL_CHARS,
            },
            "media_attachments": {
                "supported_mime_types": [],
                "image_size_limit": 16_777_216,
                "image_matrix_limit": 33_177_600,
                "video_size_limit": 103_809_024,
                "video_frame_rate_limit": 120,
                "video_matrix_limit": 8_294_400,
            },
            "polls": {
                "max_options": 4,
                "max_characters_per_option": 50,
                "min_expiration": 300,
                "max_expiration": 2_629_746,
            },
        },
        "contact_account": null,
        "rules": [],
    })
}

fn instance_v2(s: &State) -> Value {
    let host = s.base.trim_start_matches("http://");
    let streaming = s.base.replacen("http://", "ws://", 1);
    let max = s.config.max_characters;
    json!({
        "domain": host,
        "title": "Mastodon emulator",
        "version": "4.3.0",
        "source_url": "https://github.com/mastodon/mastodon",
        "description": "A test server",
        "usage": { "users": { "active_month": 1 } },
        "thumbnail": { "url": format!("{}/packs/media/images/preview.png", s.base) },
        "icon": [],
        "languages": ["en"],
        "configuration": {
            "urls": { "streaming": streaming, "status": null, "about": format!("{}/about", s.base) },
            "vapid": { "public_key": "" },
            "accounts": { "max_featured_tags": 10, "max_pinned_statuses": 5 },
            "statuses": {
                "max_characters": max,
                "max_media_attachments": 4,
                "characters_reserved_per_url": text::URL_CHARS,
            },
            "media_attachments": {
                "supported_mime_types": [],
                "description_limit": 1500,
                "image_size_limit": 16_777_216,
                "image_matrix_limit": 33_177_600,
                "video_size_limit": 103_809_024,
                "video_frame_rate_limit": 120,
                "video_matrix_limit": 8_294_400,
            },
            "polls": {
                "max_options": 4,
                "max_characters_per_option": 50,
                "min_expiration": 300,
                "max_expiration": 2_629_746,
            },
            "translation": { "enabled": false },
        },
        "registrations": { "enabled": false, "approval_required": false, "message": null, "url": null },
        "api_versions": { "mastodon": 2 },
        "contact": { "email": "admin@example.invalid", "account": null },
        "rules": [],
    })
}

/// The streaming server (`streaming/index.js`): health, then the channel (400 when unknown),
/// then the token (401), then the event stream.
fn streaming(state: &Arc<Mutex<State>>, index: usize, c: &Call) -> Response<Body> {
    if c.path == "/api/v1/streaming/health" {
        let reply = Reply {
            status: 200,
            content_type: "text/plain",
            headers: Vec::new(),
            body: b"OK".to_vec(),
        };
        return finish(state, index, reply);
    }
    let notifications_only = match c.path.as_str() {
        "/api/v1/streaming/user" => false,
        "/api/v1/streaming/user/notification" => true,
        _ => return finish(state, index, error(400, "Unknown channel requested")),
    };
    if c.method != "GET" {
        return finish(state, index, error(404, "Not found"));
    }
    let Some(token) = &c.token else {
        return finish(state, index, error(401, "Missing access token"));
    };
    let mut s = lock(state);
    let Some(account_id) = s.account_by_token(token) else {
        drop(s);
        return finish(state, index, error(401, "Invalid access token"));
    };
    let (body_tx, body) = Channel::<Bytes, io::Error>::new(64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    s.streams.push(StreamReg { account_id, notifications_only, tx });
    let heartbeat = s.config.heartbeat;
    if let Some(r) = s.requests.get_mut(index) {
        r.status = Some(200);
    }
    let date = http_date(&s);
    drop(s);
    tokio::spawn(stream_task(body_tx, rx, heartbeat));
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-store")
        .header("date", date)
        .body(body.boxed())
        .unwrap_or_else(|_| Response::new(full("")))
}

/// Writes `:)`, then heartbeats and events until the client leaves or the emulator drops
/// the stream.
async fn stream_task(
    mut body: Sender<Bytes, io::Error>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<StreamCmd>,
    heartbeat: Duration,
) {
    if body.send_data(Bytes::from_static(b":)\n")).await.is_err() {
        return;
    }
    let heartbeat = heartbeat.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if body.send_data(Bytes::from_static(b":thump\n")).await.is_err() {
                    return;
                }
            }
            command = commands.recv() => match command {
                Some(StreamCmd::Event(event)) => {
                    if body.send_data(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
                Some(StreamCmd::Cut(event)) => {
                    let mut half = event.len() / 2;
                    while !event.is_char_boundary(half) {
                        half -= 1;
                    }
                    let _ = body.send_data(Bytes::from(event[..half].to_owned())).await;
                    // Let hyper write the half out before the connection goes.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    body.abort(io::Error::other("emulator: stream cut mid-event"));
                    return;
                }
                Some(StreamCmd::Close) | None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    body.abort(io::Error::other("emulator: stream dropped"));
                    return;
                }
            }
        }
    }
}
