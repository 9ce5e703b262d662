//! The X emulator's routes: the authorize page, the token endpoint, and the v2 API.

use std::collections::BTreeSet;
use std::sync::Mutex;

use chrono::DateTime;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{self, Answer, Call, Reply};
use super::{
    lock, AuthCode, Fault, Post, State, DUPLICATE_DETAIL, MAX_WEIGHTED_LENGTH, NOT_SUMMONED_DETAIL,
};

pub(super) const EP_CREATE: &str = "POST /2/tweets";
pub(super) const EP_MENTIONS: &str = "GET /2/users/:id/mentions";
pub(super) const EP_TWEETS: &str = "GET /2/users/:id/tweets";
pub(super) const EP_ME: &str = "GET /2/users/me";

pub(super) const ALL_SCOPES: &str = "tweet.read tweet.write users.read offline.access";
const KNOWN_SCOPES: &[&str] = &[
    "tweet.read",
    "tweet.write",
    "tweet.moderate.write",
    "users.read",
    "follows.read",
    "follows.write",
    "offline.access",
    "like.read",
    "like.write",
    "list.read",
    "bookmark.read",
    "media.write",
];
const RATE_WINDOW: i64 = 15 * 60;
/// Mentions reachable through the timeline.
const MAX_MENTIONS: usize = 800;
/// Posts reachable through a user's timeline.
const MAX_TIMELINE: usize = 3200;

const TWEET_FIELDS: &[&str] = &[
    "article",
    "attachments",
    "author_id",
    "card_uri",
    "context_annotations",
    "conversation_id",
    "created_at",
    "edit_controls",
    "edit_history_tweet_ids",
    "entities",
    "geo",
    "id",
    "in_reply_to_user_id",
    "lang",
    "non_public_metrics",
    "note_tweet",
    "organic_metrics",
    "possibly_sensitive",
    "promoted_metrics",
    "public_metrics",
    "referenced_tweets",
    "reply_settings",
    "scopes",
    "source",
    "text",
    "withheld",
];
const USER_FIELDS: &[&str] = &[
    "created_at",
    "description",
    "entities",
    "id",
    "location",
    "most_recent_tweet_id",
    "name",
    "pinned_tweet_id",
    "profile_image_url",
    "protected",
    "public_metrics",
    "url",
    "username",
    "verified",
    "verified_type",
    "withheld",
];

/// The renamed spelling of a field, parameter or expansion (v2.167).
fn renamed(name: &str) -> String {
    name.replace("tweet.fields", "post.fields")
        .replace("referenced_tweets", "referenced_posts")
        .replace("edit_history_tweet_ids", "edit_history_post_ids")
        .replace("most_recent_tweet_id", "most_recent_post_id")
        .replace("pinned_tweet_id", "pinned_post_id")
        .replace("note_tweet", "note_post")
}

fn json_reply(status: u16, v: &Value) -> Reply {
    Reply::json(status, v)
}

/// An RFC 7807 problem, as X sends them.
fn problem(status: u16, title: &str, detail: &str, kind: &str) -> Reply {
    Reply::with_type(
        status,
        "application/problem+json",
        json!({"title": title, "detail": detail, "type": kind, "status": status}).to_string(),
    )
}

fn unauthorized() -> Reply {
    problem(401, "Unauthorized", "Unauthorized", "about:blank")
}

fn forbidden(detail: &str) -> Reply {
    problem(403, "Forbidden", detail, "about:blank")
}

fn invalid_request(message: &str, parameter: Option<(&str, &str)>) -> Reply {
    let mut error = json!({ "message": message });
    if let Some((name, value)) = parameter {
        error["parameters"] = json!({ name: [value] });
    }
    json_reply(
        400,
        &json!({
            "errors": [error],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        }),
    )
}

fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    json_reply(status, &json!({"error": error, "error_description": description}))
}

fn server_error(status: u16) -> Reply {
    match status {
        401 => unauthorized(),
        429 => problem(429, "Too Many Requests", "Too Many Requests", "about:blank"),
        503 => problem(503, "Service Unavailable", "Service Unavailable", "about:blank"),
        500 => problem(500, "Internal Server Error", "Internal Server Error", "about:blank"),
        other => problem(other, "Error", "Error", "about:blank"),
    }
}

fn usage_capped() -> Reply {
    json_reply(
        429,
        &json!({
            "title": "UsageCapExceeded",
            "detail": "Usage cap exceeded: Monthly product cap",
            "type": "https://api.x.com/2/problems/usage-capped",
            "period": "Monthly",
            "scope": "Product",
        }),
    )
}

fn html(status: u16, body: &str) -> Reply {
    Reply::with_type(
        status,
        "text/html; charset=utf-8",
        format!("<!DOCTYPE html><html><head><title>X</title></head><body>{body}</body></html>"),
    )
}

pub(super) fn handle(state: &Mutex<State>, call: Call) -> Answer {
    let mut s = lock(state);
    s.requests.push(call.record());
    let index = s.requests.len() - 1;
    let fault = s.take_fault(&call.method, &call.path);
    let reply = match fault {
        Some(Fault::Status(code)) => server_error(code),
        Some(Fault::UsageCapped) => usage_capped(),
        Some(Fault::TooManyRequests) => {
            let reset = (s.now().timestamp().div_euclid(RATE_WINDOW) + 1) * RATE_WINDOW;
            server_error(429)
                .header("x-rate-limit-limit", "300")
                .header("x-rate-limit-remaining", "0")
                .header("x-rate-limit-reset", reset.to_string())
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

fn route(s: &mut State, call: &Call) -> Reply {
    let path = call.path.trim_end_matches('/');
    match (call.method.as_str(), path) {
        ("GET", "/i/oauth2/authorize") => authorize_page(s, call),
        ("POST", "/2/oauth2/token") => token(s, call),
        ("POST", "/2/oauth2/revoke") => revoke(s, call),
        (_, p) if p.starts_with("/2/") => v2(s, call, p),
        _ => html(404, "<h1>Page not found</h1>"),
    }
}

// ---------------------------------------------------------------------------------------
// OAuth 2.0.

fn authorize_page(s: &mut State, call: &Call) -> Reply {
    let q = http::pairs(call.query.as_bytes());
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let went_wrong = || {
        html(400, "<h1>Something went wrong</h1><p>You weren't able to give access to the App. Go back and try logging in again.</p>")
    };
    let (Some(client_id), Some(redirect_uri)) = (get("client_id"), get("redirect_uri")) else {
        return went_wrong();
    };
    let Some(client) = s.clients.get(client_id) else { return went_wrong() };
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return went_wrong();
    }
    let scope = get("scope").unwrap_or_default();
    let scopes_ok =
        !scope.trim().is_empty() && scope.split_whitespace().all(|sc| KNOWN_SCOPES.contains(&sc));
    let method = get("code_challenge_method").unwrap_or("plain");
    let state_ok = get("state").is_some_and(|st| !st.is_empty() && st.len() <= 500);
    if get("response_type") != Some("code")
        || !scopes_ok
        || !state_ok
        || get("code_challenge").map_or(true, str::is_empty)
        || !matches!(method, "S256" | "plain")
    {
        return went_wrong();
    }
    let Some(user) = call.header(super::APPROVE_HEADER) else {
        return html(200, "<h1>Log in to X</h1><form>…</form>");
    };
    let Some(user) = s.find_user(user) else { return went_wrong() };
    let code = s.new_token("AC");
    let expires = s.now() + chrono::Duration::seconds(super::AUTH_CODE_LIFETIME.as_secs() as i64);
    s.codes.insert(
        code.clone(),
        AuthCode {
            client_id: client_id.to_owned(),
            user,
            redirect_uri: redirect_uri.to_owned(),
            challenge: get("code_challenge").unwrap_or_default().to_owned(),
            method: method.to_owned(),
            scope: scope.to_owned(),
            expires,
        },
    );
    let mut location = url::Url::parse(redirect_uri).map_or_else(
        |_| format!("{redirect_uri}?"),
        |mut u| {
            u.query_pairs_mut()
                .append_pair("state", get("state").unwrap_or_default())
                .append_pair("code", &code);
            u.to_string()
        },
    );
    if location.ends_with('?') {
        location.push_str(&format!("code={code}"));
    }
    html(302, "<p>Redirecting…</p>").header("location", location)
}

/// The client the token request authenticates as, or the error to answer.
fn token_client(s: &State, call: &Call, form: &[(String, String)]) -> Result<String, Reply> {
    let refused = || oauth_error(401, "unauthorized_client", "Missing valid authorization header");
    if let Some(basic) = call.header("authorization").and_then(|a| a.strip_prefix("Basic ")) {
        let decoded = http::base64_decode(basic).ok_or_else(refused)?;
        let text = String::from_utf8(decoded).map_err(|_| refused())?;
        let (id, secret) = text.split_once(':').ok_or_else(refused)?;
        return match s.clients.get(id) {
            Some(c) if c.secret.as_deref() == Some(secret) => Ok(id.to_owned()),
            _ => Err(refused()),
        };
    }
    let Some(id) = form.iter().find(|(k, _)| k == "client_id").map(|(_, v)| v.clone()) else {
        return Err(oauth_error(400, "invalid_request", "Missing required parameter [client_id]."));
    };
    match s.clients.get(&id) {
        // A confidential client must authenticate.
        Some(c) if c.secret.is_none() => Ok(id),
        _ => Err(refused()),
    }
}

fn token(s: &mut State, call: &Call) -> Reply {
    let form = http::pairs(&call.body);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let client_id = match token_client(s, call, &form) {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let now = s.now();
    let (user, scope) = match get("grant_type").as_deref() {
        Some("authorization_code") => {
            for required in ["code", "redirect_uri", "code_verifier"] {
                if get(required).is_none() {
                    return oauth_error(
                        400,
                        "invalid_request",
                        &format!("Missing required parameter [{required}]."),
                    );
                }
            }
            let invalid = || {
                oauth_error(
                    400,
                    "invalid_request",
                    "Value passed for the authorization code was invalid.",
                )
            };
            // A code works once, whatever happens.
            let Some(code) = get("code").and_then(|c| s.codes.remove(&c)) else {
                return invalid();
            };
            let verifier = get("code_verifier").unwrap_or_default();
            let computed = match code.method.as_str() {
                "S256" => http::base64url(&Sha256::digest(verifier.as_bytes())),
                _ => verifier.clone(),
            };
            if code.client_id != client_id
                || code.expires <= now
                || get("redirect_uri").as_deref() != Some(code.redirect_uri.as_str())
                || computed != code.challenge
            {
                return invalid();
            }
            (code.user, code.scope)
        }
        Some("refresh_token") => {
            let invalid =
                || oauth_error(400, "invalid_request", "Value passed for the token was invalid.");
            let Some(given) = get("refresh_token") else {
                return oauth_error(
                    400,
                    "invalid_request",
                    "Missing required parameter [refresh_token].",
                );
            };
            let Some(r) = s.refresh.get_mut(&given) else { return invalid() };
            if !r.valid || r.client_id != client_id {
                return invalid();
            }
            // Rotation: the token used is dead from now on.
            r.valid = false;
            (r.user, r.scope.clone())
        }
        _ => return oauth_error(400, "unsupported_grant_type", "Unsupported grant type."),
    };
    let (access, refresh) = s.issue(user, &client_id, &scope);
    let mut answer = json!({
        "token_type": "bearer",
        "expires_in": s.config.access_lifetime.as_secs(),
        "access_token": access,
        "scope": scope,
    });
    if let Some(r) = refresh {
        answer["refresh_token"] = json!(r);
    }
    json_reply(200, &answer)
}

fn revoke(s: &mut State, call: &Call) -> Reply {
    let form = http::pairs(&call.body);
    if let Err(reply) = token_client(s, call, &form) {
        return reply;
    }
    let Some(token) = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone()) else {
        return oauth_error(400, "invalid_request", "Missing required parameter [token].");
    };
    s.access.remove(&token);
    if let Some(r) = s.refresh.get_mut(&token) {
        r.valid = false;
    }
    json_reply(200, &json!({"revoked": true}))
}

// ---------------------------------------------------------------------------------------
// The v2 API.

struct Rate {
    limit: u32,
    remaining: u32,
    reset: i64,
}

fn with_rate(reply: Reply, rate: &Rate) -> Reply {
    reply
        .header("x-rate-limit-limit", rate.limit.to_string())
        .header("x-rate-limit-remaining", rate.remaining.to_string())
        .header("x-rate-limit-reset", rate.reset.to_string())
}

fn v2(s: &mut State, call: &Call, path: &str) -> Reply {
    let now = s.now();
    let token = call.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
    let Some(access) = token.and_then(|t| s.access.get(t)).filter(|a| a.expires > now).cloned()
    else {
        return unauthorized();
    };
    if s.config.usage_capped {
        return usage_capped();
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let endpoint = match (call.method.as_str(), segments.as_slice()) {
        ("GET", ["2", "users", "me"]) => EP_ME,
        ("POST", ["2", "tweets"]) => EP_CREATE,
        ("GET", ["2", "users", _, "mentions"]) => EP_MENTIONS,
        ("GET", ["2", "users", _, "tweets"]) => EP_TWEETS,
        _ => {
            return problem(
                404,
                "Not Found Error",
                "Sorry, that page does not exist.",
                "https://api.twitter.com/2/problems/resource-not-found",
            )
        }
    };
    // Fixed 15-minute windows per user and endpoint.
    let window = now.timestamp().div_euclid(RATE_WINDOW);
    let limit = s.config.limits.get(endpoint).copied().unwrap_or(u32::MAX);
    let hits = s.rate.entry((access.user, endpoint.to_owned())).or_insert((window, 0));
    if hits.0 != window {
        *hits = (window, 0);
    }
    hits.1 += 1;
    let rate =
        Rate { limit, remaining: limit.saturating_sub(hits.1), reset: (window + 1) * RATE_WINDOW };
    if hits.1 > limit {
        return with_rate(server_error(429), &rate);
    }
    let scopes: BTreeSet<&str> = access.scope.split_whitespace().collect();
    let needs: &[&str] = if endpoint == EP_CREATE {
        &["tweet.read", "tweet.write", "users.read"]
    } else {
        &["tweet.read", "users.read"]
    };
    if !needs.iter().all(|n| scopes.contains(n)) {
        return with_rate(forbidden("Forbidden"), &rate);
    }
    let reply = match endpoint {
        EP_ME => users_me(s, call, access.user),
        EP_CREATE => create(s, call, access.user),
        EP_MENTIONS | EP_TWEETS => timeline(s, call, segments[2], endpoint == EP_MENTIONS),
        _ => server_error(500),
    };
    with_rate(reply, &rate)
}

/// The query's pairs, or a 400 naming a parameter that is not one of `allowed`.
fn query_of(call: &Call, allowed: &[&str]) -> Result<Vec<(String, String)>, Reply> {
    let q = http::pairs(call.query.as_bytes());
    for (k, v) in &q {
        if !allowed.contains(&k.as_str()) {
            return Err(invalid_request(
                &format!("The query parameter [{k}] is not one of [{}]", allowed.join(",")),
                Some((k, v)),
            ));
        }
    }
    Ok(q)
}

/// A comma-separated list parameter whose values must be among `allowed`.
fn list_param(
    q: &[(String, String)],
    name: &str,
    allowed: &[String],
) -> Result<Vec<String>, Reply> {
    let Some((_, v)) = q.iter().find(|(k, _)| k == name) else { return Ok(Vec::new()) };
    let values: Vec<String> = v.split(',').map(|x| x.trim().to_owned()).collect();
    for value in &values {
        if !allowed.contains(value) {
            return Err(invalid_request(
                &format!(
                    "The `{name}` query parameter value [{value}] is not one of [{}]",
                    allowed.join(",")
                ),
                Some((name, value)),
            ));
        }
    }
    Ok(values)
}

fn spelled(s: &State, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| if s.config.renamed_fields { renamed(n) } else { (*n).to_owned() })
        .collect()
}

fn users_me(s: &State, call: &Call, user: u64) -> Reply {
    let q = match query_of(call, &["user.fields", "expansions", &fields_param(s)]) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let user_fields = match list_param(&q, "user.fields", &spelled(s, USER_FIELDS)) {
        Ok(f) => f,
        Err(r) => return r,
    };
    json_reply(200, &json!({ "data": s.user_json(user, &user_fields) }))
}

fn fields_param(s: &State) -> String {
    if s.config.renamed_fields {
        "post.fields".into()
    } else {
        "tweet.fields".into()
    }
}

/// Code points that weigh 1 in twitter-text config v3; all others weigh 2.
fn light(c: char) -> bool {
    matches!(c as u32, 0x0000..=0x10FF | 0x2000..=0x200D | 0x2010..=0x201F | 0x2032..=0x2037)
}

/// The byte range of the first http(s) link in `text`: from the scheme to the next
/// whitespace, trailing punctuation excluded.
pub(super) fn find_link(text: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    loop {
        let rest = &text[from..];
        let at = [rest.find("https://"), rest.find("http://")].into_iter().flatten().min()?;
        let start = from + at;
        let boundary = text[..start].chars().next_back().map_or(true, |c| !c.is_alphanumeric());
        let tail = &text[start..];
        let len = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let link = tail[..len].trim_end_matches(|c: char| ".,;:!?)]}\"'".contains(c));
        let scheme = if link.starts_with("https://") { 8 } else { 7 };
        if boundary && link.len() > scheme {
            return Some((start, start + link.len()));
        }
        from = start + scheme;
    }
}

/// The weighted length of a post as its author wrote it: every link 23.
pub(crate) fn weighted_length(text: &str) -> usize {
    let weigh = |s: &str| s.chars().map(|c| if light(c) { 1 } else { 2 }).sum::<usize>();
    let mut total = 0;
    let mut rest = text;
    while let Some((start, end)) = find_link(rest) {
        total += weigh(&rest[..start]) + 23;
        rest = &rest[end..];
    }
    total + weigh(rest)
}

fn create(s: &mut State, call: &Call, user: u64) -> Reply {
    if !call.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return invalid_request(
            "Requests with bodies must have content-type of application/json.",
            None,
        );
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&call.body) else {
        return invalid_request("Request body is not valid JSON.", None);
    };
    let Some(text) = body.get("text").and_then(Value::as_str).filter(|t| !t.trim().is_empty())
    else {
        return invalid_request("$.text: is missing but it is required", None);
    };
    let reply_to =
        match body.get("reply") {
            None | Some(Value::Null) => None,
            Some(reply) => {
                let Some(id) = reply.get("in_reply_to_tweet_id").and_then(Value::as_str) else {
                    return invalid_request(
                        "$.reply.in_reply_to_tweet_id: is missing but it is required",
                        None,
                    );
                };
                match id.parse::<u64>().ok().and_then(|id| s.posts.get(&id)).cloned() {
                    Some(target) => Some(target),
                    None => return forbidden(
                        "You attempted to reply to a Tweet that is deleted or not visible to you.",
                    ),
                }
            }
        };
    let quote = match body.get("quote_tweet_id").and_then(Value::as_str) {
        None => None,
        Some(q) => match q.parse::<u64>().ok().filter(|q| s.posts.contains_key(q)) {
            Some(q) => Some(q),
            None => {
                return invalid_request(
                    "The quoted post does not exist.",
                    Some(("quote_tweet_id", q)),
                )
            }
        },
    };
    if let Some(target) = &reply_to {
        if !s.summoned(user, target) {
            return forbidden(NOT_SUMMONED_DETAIL);
        }
    }
    if weighted_length(text.trim()) > MAX_WEIGHTED_LENGTH {
        return forbidden("Your Tweet text is too long. For more information on how Twitter determines text length see https://github.com/twitter/twitter-text.");
    }
    let written = text.trim();
    if s.posts.values().any(|p: &Post| p.author == user && p.written == written) {
        return forbidden(DUPLICATE_DETAIL);
    }
    let id = s.create_post(user, text, reply_to.map(|t| t.id), quote);
    let renamed = s.config.renamed_fields;
    let Some(p) = s.posts.get(&id) else { return server_error(500) };
    let history = if renamed { "edit_history_post_ids" } else { "edit_history_tweet_ids" };
    let mut data = json!({"id": id.to_string(), "text": p.text});
    data[history] = json!([id.to_string()]);
    json_reply(201, &json!({ "data": data }))
}

fn pagination_token(id: u64) -> String {
    format!("7140dibd{:x}", id ^ 0x5A5A_5A5A_5A5A)
}

fn parse_pagination_token(token: &str) -> Option<u64> {
    let hex = token.strip_prefix("7140dibd")?;
    u64::from_str_radix(hex, 16).ok().map(|v| v ^ 0x5A5A_5A5A_5A5A)
}

fn timeline(s: &State, call: &Call, user: &str, mentions: bool) -> Reply {
    let fields_param = fields_param(s);
    let mut allowed = vec![
        "since_id",
        "until_id",
        "max_results",
        "pagination_token",
        "start_time",
        "end_time",
        "expansions",
        "media.fields",
        "place.fields",
        "poll.fields",
        "user.fields",
        fields_param.as_str(),
    ];
    if !mentions {
        allowed.push("exclude");
    }
    let q = match query_of(call, &allowed) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(user) = user.parse::<u64>().ok().filter(|u| s.users.contains_key(u)) else {
        return json_reply(
            200,
            &json!({"errors": [{"value": user, "detail": format!("Could not find user with id: [{user}]."),
                "title": "Not Found Error", "resource_type": "user", "parameter": "id", "resource_id": user,
                "type": "https://api.twitter.com/2/problems/resource-not-found"}]}),
        );
    };
    let post_fields = match list_param(&q, &fields_param, &spelled(s, TWEET_FIELDS)) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let user_fields = match list_param(&q, "user.fields", &spelled(s, USER_FIELDS)) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let expansions = match list_param(
        &q,
        "expansions",
        &spelled(
            s,
            &[
                "author_id",
                "referenced_tweets.id",
                "in_reply_to_user_id",
                "entities.mentions.username",
                "attachments.media_keys",
                "referenced_tweets.id.author_id",
            ],
        ),
    ) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let excluded = match list_param(&q, "exclude", &["replies".into(), "retweets".into()]) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let max_results = match get("max_results").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (5..=100).contains(&n) => n,
        Some(_) => {
            let v = get("max_results").unwrap_or_default();
            return invalid_request(
                &format!("The `max_results` query parameter value [{v}] is not between 5 and 100"),
                Some(("max_results", v)),
            );
        }
    };
    let id_param = |name: &str| -> Result<Option<u64>, Reply> {
        match get(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                invalid_request(
                    &format!(
                        "The `{name}` query parameter value [{v}] does not match ^[0-9]{{1,19}}$"
                    ),
                    Some((name, v)),
                )
            }),
        }
    };
    let time_param = |name: &str| -> Result<Option<DateTime<chrono::Utc>>, Reply> {
        match get(name) {
            None => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(v).map(|t| Some(t.with_timezone(&chrono::Utc))).map_err(|_| {
                invalid_request(&format!("Invalid '{name}':'{v}'. '{name}' must be a YYYY-MM-DDTHH:mm:ssZ timestamp."), Some((name, v)))
            }),
        }
    };
    let (since_id, until_id, start, end) = match (
        id_param("since_id"),
        id_param("until_id"),
        time_param("start_time"),
        time_param("end_time"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(r), ..) | (_, Err(r), ..) | (_, _, Err(r), _) | (.., Err(r)) => return r,
    };
    let cursor = match get("pagination_token") {
        None => None,
        Some(t) => match parse_pagination_token(t) {
            Some(c) => Some(c),
            None => {
                return invalid_request(
                    &format!("The `pagination_token` query parameter value [{t}] is not valid"),
                    Some(("pagination_token", t)),
                )
            }
        },
    };

    // Newest first; only the most recent are reachable at all.
    let reachable: Vec<&Post> =
        s.posts
            .values()
            .rev()
            .filter(|p| {
                if mentions {
                    p.mentions.iter().any(|m| m.id == user)
                } else {
                    p.author == user
                }
            })
            .take(if mentions { MAX_MENTIONS } else { MAX_TIMELINE })
            .filter(|p| {
                !(excluded.iter().any(|e| e == "replies")
                    && p.referenced.iter().any(|(k, _)| k == "replied_to"))
            })
            .collect();
    // `since_id`/`until_id` win over the times.
    let selected: Vec<&Post> = reachable
        .into_iter()
        .filter(|p| since_id.map_or(true, |s| p.id > s))
        .filter(|p| until_id.map_or(true, |u| p.id < u))
        .filter(|p| since_id.is_some() || start.map_or(true, |t| p.created_at >= t))
        .filter(|p| until_id.is_some() || end.map_or(true, |t| p.created_at < t))
        .filter(|p| cursor.map_or(true, |c| p.id < c))
        .collect();
    let page: Vec<&Post> = selected.iter().take(max_results).copied().collect();
    let more = selected.len() > page.len();

    if page.is_empty() {
        return json_reply(200, &json!({"meta": {"result_count": 0}}));
    }
    let renamed = s.config.renamed_fields;
    let data: Vec<Value> =
        page.iter().map(|p| s.post_json(p, Some(&post_fields), renamed)).collect();
    let mut body = json!({ "data": data });
    let mut includes = json!({});
    if expansions.iter().any(|e| e == "author_id") {
        let mut authors: Vec<u64> = page.iter().map(|p| p.author).collect();
        authors.sort_unstable();
        authors.dedup();
        includes["users"] = authors.iter().map(|a| s.user_json(*a, &user_fields)).collect();
    }
    let referenced_expansion = if renamed { "referenced_posts.id" } else { "referenced_tweets.id" };
    if expansions.iter().any(|e| e == referenced_expansion) {
        let refs: Vec<Value> = page
            .iter()
            .flat_map(|p| p.referenced.iter().map(|(_, id)| *id))
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .filter_map(|id| s.posts.get(&id))
            .map(|p| s.post_json(p, Some(&post_fields), renamed))
            .collect();
        if !refs.is_empty() {
            includes[if renamed { "posts" } else { "tweets" }] = Value::Array(refs);
        }
    }
    if includes.as_object().is_some_and(|o| !o.is_empty()) {
        body["includes"] = includes;
    }
    let mut meta = json!({
        "result_count": page.len(),
        "newest_id": page[0].id.to_string(),
        "oldest_id": page[page.len() - 1].id.to_string(),
    });
    if more {
        meta["next_token"] = json!(pagination_token(page[page.len() - 1].id));
    }
    if cursor.is_some() {
        meta["previous_token"] = json!(pagination_token(page[0].id + 1));
    }
    body["meta"] = meta;
    json_reply(200, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_weights() {
        assert_eq!(find_link("see https://a.b/c."), Some((4, 17)));
        assert_eq!(find_link("xhttps://a.b nope"), None);
        assert_eq!(find_link("no link"), None);
        assert_eq!(weighted_length("abc"), 3);
        assert_eq!(weighted_length("日本"), 4);
        assert_eq!(weighted_length("New: x https://blog.test/a/very/long/path/indeed/yes"), 7 + 23);
        assert_eq!(weighted_length("“quotes” — dash"), 15);
    }
}
