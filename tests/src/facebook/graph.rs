//! The Facebook emulator's Graph routes, errors, field selection, paging and quota.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{lock, CommentRec, Fault, PostRec, State};
use crate::x::http::{self, Answer, Call, Reply};

/// One requested field, with the subfields of `name{a,b}`.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) sub: Vec<String>,
}

impl Field {
    pub(crate) fn plain(name: &str) -> Field {
        Field { name: name.to_owned(), sub: Vec::new() }
    }

    /// `id,from{id,name},message` → fields; commas inside braces do not split.
    pub(crate) fn list(text: &str) -> Vec<Field> {
        let mut out = Vec::new();
        let mut depth = 0;
        let mut current = String::new();
        let push = |item: &str, out: &mut Vec<Field>| {
            let item = item.trim();
            if item.is_empty() {
                return;
            }
            match item.split_once('{') {
                Some((name, rest)) => out.push(Field {
                    name: name.trim().to_owned(),
                    sub: rest
                        .trim_end_matches('}')
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                }),
                None => out.push(Field::plain(item)),
            }
        };
        for c in text.chars() {
            match c {
                '{' => {
                    depth += 1;
                    current.push(c);
                }
                '}' => {
                    depth -= 1;
                    current.push(c);
                }
                ',' if depth == 0 => {
                    push(&current, &mut out);
                    current.clear();
                }
                _ => current.push(c),
            }
        }
        push(&current, &mut out);
        out
    }
}

const PAGE_FIELDS: &[&str] = &["id", "name", "link", "category", "username", "about", "fan_count"];
const POST_FIELDS: &[&str] = &[
    "id",
    "message",
    "link",
    "created_time",
    "updated_time",
    "permalink_url",
    "from",
    "is_published",
    "status_type",
];
const COMMENT_FIELDS: &[&str] = &[
    "id",
    "message",
    "created_time",
    "from",
    "parent",
    "permalink_url",
    "comment_count",
    "like_count",
    "can_comment",
    "is_hidden",
];

/// A Graph error body.
fn graph_error(
    status: u16,
    code: i64,
    subcode: Option<i64>,
    message: &str,
    s: &mut State,
) -> Reply {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": format!("A{}x{}", s.next, s.requests.len()),
    });
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    if matches!(code, 1 | 2 | 4 | 17 | 32 | 613) {
        error["is_transient"] = json!(true);
    }
    if code == 506 {
        error["error_user_title"] = json!("Duplicate Post");
        error["error_user_msg"] = json!("This status update is identical to the last one you posted. Try posting something different, or delete your previous update.");
        error["is_transient"] = json!(false);
    }
    let mut reply = Reply::json(status, &json!({ "error": error }));
    if code == 190 || code == 104 {
        reply = reply.header(
            "www-authenticate",
            format!("OAuth \"Facebook Platform\" \"invalid_token\" \"{message}\""),
        );
    }
    reply
}

fn message_for(code: i64) -> &'static str {
    match code {
        1 => "An unknown error has occurred.",
        2 => "An unexpected error has occurred. Please retry your request later.",
        4 => "(#4) Application request limit reached",
        17 => "(#17) User request limit reached",
        32 => "(#32) Page request limit reached",
        100 => "(#100) Invalid parameter",
        190 => "Invalid OAuth access token - Cannot parse access token",
        200 => "(#200) Permissions error",
        368 => "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
        506 => "Duplicate status message",
        613 => "(#613) Calls to this api have exceeded the rate limit.",
        1609005 => "(#1609005) Error Posting Link: the link could not be fetched",
        _ => "An unknown error has occurred.",
    }
}

fn unsupported(method: &str, id: &str, s: &mut State) -> Reply {
    let verb = if method == "POST" { "post" } else { "get" };
    graph_error(
        400,
        100,
        Some(33),
        &format!("Unsupported {verb} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"),
        s,
    )
}

pub(super) fn handle(state: &Mutex<State>, call: Call) -> Answer {
    let mut s = lock(state);
    s.requests.push(call.record());
    let index = s.requests.len() - 1;
    let fault = s.take_fault(&call.method, &call.path);
    let reply = match fault {
        Some(Fault::Status(status)) => graph_error(status, 2, None, message_for(2), &mut s),
        Some(Fault::Graph { code, subcode }) => {
            graph_error(400, code, subcode, message_for(code), &mut s)
        }
        _ => route(&mut s, &call),
    };
    match fault {
        Some(Fault::DropAfterCreate) => Answer::Drop,
        Some(Fault::Slow(delay)) => {
            s.requests[index].status = Some(reply.status);
            Answer::Late(reply, delay)
        }
        _ => {
            s.requests[index].status = Some(reply.status);
            Answer::Reply(reply)
        }
    }
}

/// Query and form parameters, query first.
fn params_of(call: &Call) -> Vec<(String, String)> {
    let mut params = http::pairs(call.query.as_bytes());
    if call.method == "POST" {
        params.extend(http::pairs(&call.body));
    }
    params
}

fn route(s: &mut State, call: &Call) -> Reply {
    let params = params_of(call);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut segments: Vec<String> = call
        .path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if segments.first().is_some_and(|v| {
        v.starts_with('v')
            && v[1..].split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }) {
        segments.remove(0);
    }

    // Authentication: a Page token, as a header or a parameter.
    let token = call
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("OAuth ")))
        .map(|t| t.trim().to_owned())
        .or_else(|| get("access_token"));
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return graph_error(
            400,
            104,
            None,
            "An access token is required to request this resource.",
            s,
        );
    };
    let Some(page) = s.pages.values().find(|p| p.token == token).cloned() else {
        return graph_error(400, 190, None, message_for(190), s);
    };
    if let Some(sub) = page.invalidated {
        let why = match sub {
            460 => "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
            463 => "Error validating access token: Session has expired.",
            _ => "Error validating access token: The access token is invalid.",
        };
        return graph_error(400, 190, Some(sub), why, s);
    }

    // The Page's hourly quota (fixed windows), reported on every answer.
    let now = s.now();
    let window = now.timestamp().div_euclid(3600);
    let limit = s.call_limit.max(1);
    let calls = {
        let c = s.calls.entry((page.id.clone(), window)).or_insert(0);
        *c += 1;
        *c
    };
    let percent = (u64::from(calls) * 100 / u64::from(limit)).min(100);
    let regain = if calls > limit { ((window + 1) * 3600 - now.timestamp() + 59) / 60 } else { 0 };
    let usage = json!({ page.id.clone(): [{
        "type": "pages", "call_count": percent, "total_cputime": percent / 4, "total_time": percent / 4,
        "estimated_time_to_regain_access": regain,
    }]})
    .to_string();
    let reply = if calls > limit {
        graph_error(400, 32, None, message_for(32), s)
    } else {
        dispatch(s, call, &segments, &params, &page.id, &token)
    };
    reply.header("x-business-use-case-usage", usage)
}

fn fields_of(
    params: &[(String, String)],
    default: &str,
    allowed: &[&str],
    node: &str,
) -> Result<Vec<Field>, String> {
    let text = params.iter().find(|(k, _)| k == "fields").map_or(default, |(_, v)| v.as_str());
    let fields = Field::list(text);
    for f in &fields {
        if !allowed.contains(&f.name.as_str()) {
            return Err(format!(
                "(#100) Tried accessing nonexisting field ({}) on node type ({node})",
                f.name
            ));
        }
    }
    Ok(fields)
}

fn dispatch(
    s: &mut State,
    call: &Call,
    segments: &[String],
    params: &[(String, String)],
    me: &str,
    token: &str,
) -> Reply {
    let method = call.method.as_str();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, seg.as_slice()) {
        ("GET", ["me"]) => node(s, params, me),
        ("GET", [id]) => node(s, params, id),
        ("POST", [page, "feed"]) => create_post(s, params, me, page),
        ("GET", [page, "feed" | "posts" | "published_posts"]) if s.pages.contains_key(*page) => {
            list_posts(s, call, params, page, token)
        }
        ("GET", [object, "comments"]) => list_comments(s, call, params, object, token),
        ("POST", [object, "comments"]) => create_comment(s, params, me, object),
        (_, [id, ..]) => unsupported(method, id, s),
        _ => unsupported(method, "", s),
    }
}

fn node(s: &mut State, params: &[(String, String)], id: &str) -> Reply {
    let result = if let Some(p) = s.pages.get(id).cloned() {
        fields_of(params, "id,name", PAGE_FIELDS, "Page").map(|fields| {
            let mut v = json!({});
            for f in fields {
                match f.name.as_str() {
                    "id" => v["id"] = json!(p.id),
                    "name" => v["name"] = json!(p.name),
                    "link" => v["link"] = json!(format!("https://www.facebook.com/{}", p.id)),
                    "category" => v["category"] = json!("Blogger"),
                    _ => {}
                }
            }
            v
        })
    } else if let Some(p) = s.post(id).cloned() {
        fields_of(params, "created_time,message,id", POST_FIELDS, "PagePost")
            .map(|fields| s.post_json(&p, &fields))
    } else if let Some(c) = s.comment(id).cloned() {
        fields_of(params, "created_time,from,message,id", COMMENT_FIELDS, "Comment")
            .map(|fields| s.comment_json(&c, &fields))
    } else {
        return unsupported("GET", id, s);
    };
    match result {
        Ok(v) => Reply::json(200, &v),
        Err(message) => graph_error(400, 100, None, &message, s),
    }
}

fn cursor(seq: u64) -> String {
    format!("QVFIU{:x}", seq ^ 0x00C0_FFEE)
}

fn parse_cursor(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("QVFIU")?, 16).ok().map(|v| v ^ 0x00C0_FFEE)
}

/// One page of `items` (already ordered) after/before the cursor, with Graph's `paging`.
fn paged(
    s: &mut State,
    call: &Call,
    params: &[(String, String)],
    items: Vec<(u64, Value)>,
    token: &str,
) -> Reply {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit").map(str::parse::<usize>) {
        None => 25,
        Some(Ok(n)) if n > 0 => n.min(100),
        Some(_) => {
            return graph_error(
                400,
                100,
                None,
                "(#100) The parameter limit must be a positive number",
                s,
            )
        }
    };
    let position =
        |c: &str| parse_cursor(c).and_then(|seq| items.iter().position(|(q, _)| *q == seq));
    let (start, end) = match (get("after"), get("before")) {
        (Some(a), _) => match position(a) {
            Some(p) => (p + 1, (p + 1 + limit).min(items.len())),
            None => return graph_error(400, 100, None, "(#100) Invalid cursor", s),
        },
        (None, Some(b)) => match position(b) {
            Some(p) => (p.saturating_sub(limit), p),
            None => return graph_error(400, 100, None, "(#100) Invalid cursor", s),
        },
        (None, None) => (0, limit.min(items.len())),
    };
    let page = &items[start.min(end)..end];
    let data: Vec<Value> = page.iter().map(|(_, v)| v.clone()).collect();
    let mut body = json!({ "data": data });
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        let mut paging = json!({"cursors": {"before": cursor(first.0), "after": cursor(last.0)}});
        let kept: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "after" | "before" | "access_token"))
            .cloned()
            .collect();
        let link = |rel: &str, c: &str| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("access_token", token);
            for (k, v) in &kept {
                q.append_pair(k, v);
            }
            q.append_pair(rel, c);
            format!("{}{}?{}", s.base, call.path, q.finish())
        };
        if end < items.len() {
            paging["next"] = json!(link("after", &cursor(last.0)));
        }
        if start > 0 {
            paging["previous"] = json!(link("before", &cursor(first.0)));
        }
        body["paging"] = paging;
    }
    Reply::json(200, &body)
}

/// `since`/`until`: Unix seconds or an RFC 3339 / `YYYY-MM-DD` time.
fn time_param(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(n) = v.parse::<i64>() {
        return DateTime::from_timestamp(n, 0);
    }
    DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
    })
}

fn list_posts(
    s: &mut State,
    call: &Call,
    params: &[(String, String)],
    page: &str,
    token: &str,
) -> Reply {
    let fields = match fields_of(params, "created_time,message,id", POST_FIELDS, "PagePost") {
        Ok(f) => f,
        Err(m) => return graph_error(400, 100, None, &m, s),
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let since = get("since").and_then(time_param);
    let until = get("until").and_then(time_param);
    let posts: Vec<PostRec> = s
        .posts
        .values()
        .rev()
        .filter(|p| p.page_id == page)
        .filter(|p| since.map_or(true, |t| p.created >= t))
        .filter(|p| until.map_or(true, |t| p.created <= t))
        .cloned()
        .collect();
    let items = posts.iter().map(|p| (p.seq, s.post_json(p, &fields))).collect();
    paged(s, call, params, items, token)
}

fn list_comments(
    s: &mut State,
    call: &Call,
    params: &[(String, String)],
    object: &str,
    token: &str,
) -> Reply {
    let fields = match fields_of(params, "created_time,from,message,id", COMMENT_FIELDS, "Comment")
    {
        Ok(f) => f,
        Err(m) => return graph_error(400, 100, None, &m, s),
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let stream = match get("filter") {
        None | Some("toplevel") => false,
        Some("stream") => true,
        Some(other) => {
            return graph_error(
                400,
                100,
                None,
                &format!(
                "(#100) filter must be one of the following values: toplevel, stream (got {other})"
            ),
                s,
            )
        }
    };
    let reverse = match get("order") {
        None | Some("chronological") | Some("ranked") => false,
        Some("reverse_chronological") => true,
        Some(other) => {
            return graph_error(400, 100, None, &format!("(#100) order must be one of the following values: chronological, reverse_chronological, ranked (got {other})"), s)
        }
    };
    let mut comments: Vec<CommentRec> = if s.post(object).is_some() {
        s.comments
            .values()
            .filter(|c| c.post_id == object && (stream || c.parent.is_none()))
            .cloned()
            .collect()
    } else if s.comment(object).is_some() {
        s.comments.values().filter(|c| c.parent.as_deref() == Some(object)).cloned().collect()
    } else {
        return unsupported("GET", object, s);
    };
    comments.sort_by_key(|c| (c.created, c.seq));
    if reverse {
        comments.reverse();
    }
    let items = comments.iter().map(|c| (c.seq, s.comment_json(c, &fields))).collect();
    paged(s, call, params, items, token)
}

fn create_post(s: &mut State, params: &[(String, String)], me: &str, page: &str) -> Reply {
    if page != me {
        if s.pages.contains_key(page) {
            return graph_error(403, 200, None, "(#200) If posting to a page, requires both pages_read_engagement and pages_manage_posts as an admin with sufficient administrative permission", s);
        }
        return unsupported("POST", page, s);
    }
    let get = |k: &str| {
        params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.trim().is_empty())
    };
    let (message, link) = (get("message"), get("link"));
    if message.is_none() && link.is_none() {
        return graph_error(400, 100, None, "(#100) Missing message or attachment", s);
    }
    if let Some(l) = &link {
        if s.unreachable_links.iter().any(|u| u == l) {
            return graph_error(400, 1609005, None, message_for(1609005), s);
        }
    }
    let latest = s.posts.values().rev().find(|p| p.page_id == page).map(|p| p.message.clone());
    if message.is_some() && latest == Some(message.clone()) {
        return graph_error(400, 506, Some(1_455_006), message_for(506), s);
    }
    let id = s.create_post(page, message.as_deref(), link.as_deref());
    Reply::json(200, &json!({ "id": id }))
}

fn create_comment(s: &mut State, params: &[(String, String)], me: &str, object: &str) -> Reply {
    if s.post(object).is_none() && s.comment(object).is_none() {
        return unsupported("POST", object, s);
    }
    let Some(message) = params
        .iter()
        .find(|(k, _)| k == "message")
        .map(|(_, v)| v.clone())
        .filter(|m| !m.trim().is_empty())
    else {
        return graph_error(400, 100, None, "(#100) Missing message or attachment", s);
    };
    match s.create_comment(me, object, &message) {
        Some(id) => Reply::json(200, &json!({ "id": id })),
        None => unsupported("POST", object, s),
    }
}
