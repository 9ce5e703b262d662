//! OAuth 2.0 for X: the one-time Authorization Code flow with PKCE (for `presencectl login
//! x`), the token refresh the account does by itself, and the session map both produce.
//!
//! Facts from `shared/api/networks.md` §3.1: the authorize page is `https://x.com/i/oauth2/authorize`;
//! the token endpoint `POST /2/oauth2/token` takes a form, with `client_id` in the body for a
//! public client or HTTP Basic `client_id:client_secret` for a confidential one; the
//! authorization code lives 30 s; access tokens last 2 h; every refresh returns a new
//! refresh token and kills the old one.
//!
//! # The session map
//!
//! [`exchange_code`] returns, and [`super::X::new`] accepts, a `BTreeMap<String, String>`
//! with these keys (the daemon keeps it in its state file, mode 0600):
//!
//! | key             | value                                                   |
//! |-----------------|---------------------------------------------------------|
//! | `access_token`  | the bearer token                                        |
//! | `refresh_token` | the current refresh token (absent without `offline.access`) |
//! | `expires_at`    | when the access token expires, Unix seconds (our clock) |
//! | `scope`         | the scopes granted, space-separated, as X answered       |
//! | `user_id`       | the account's numeric id (`GET /2/users/me`)             |
//! | `username`      | the account's handle, without `@`                       |
//!
//! Other keys are kept as they are.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::wire::{self, Effect, Failure};
use crate::config::Secret;
use crate::network::NetError;

/// Where the authorize page lives when no other site is named.
pub const AUTHORIZE_BASE: &str = "https://x.com";
/// The authorize page's path on that site.
pub const AUTHORIZE_PATH: &str = "/i/oauth2/authorize";
/// The scopes presence needs: read and write posts, read users (mentions' authors), and
/// `offline.access` for a refresh token (without it the session dies after 2 hours).
pub const SCOPES: &str = "tweet.read tweet.write users.read offline.access";

pub(super) const K_ACCESS: &str = "access_token";
pub(super) const K_REFRESH: &str = "refresh_token";
pub(super) const K_EXPIRES_AT: &str = "expires_at";
pub(super) const K_SCOPE: &str = "scope";
pub(super) const K_USER_ID: &str = "user_id";
pub(super) const K_USERNAME: &str = "username";

/// The access token's life when the answer does not say (documented as 2 hours).
const DEFAULT_EXPIRES_IN: i64 = 7200;

/// A token: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Token(pub(super) String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// The account's OAuth session, as kept in the session map.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Session {
    pub(super) access: Option<Token>,
    pub(super) refresh: Option<Token>,
    pub(super) expires_at: Option<i64>,
    pub(super) scope: Option<String>,
    pub(super) user_id: Option<String>,
    pub(super) username: Option<String>,
    /// Keys this version does not know, kept as they came.
    pub(super) other: BTreeMap<String, String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access", &self.access.as_ref().map(|_| "[redacted]"))
            .field("refresh", &self.refresh.as_ref().map(|_| "[redacted]"))
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("other", &self.other.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Session {
    pub(super) fn from_map(map: BTreeMap<String, String>) -> Session {
        let mut map = map;
        let mut take =
            |k: &str| map.remove(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let access = take(K_ACCESS).map(Token);
        let refresh = take(K_REFRESH).map(Token);
        let expires_at = take(K_EXPIRES_AT).and_then(|v| v.parse().ok());
        let scope = take(K_SCOPE);
        let user_id = take(K_USER_ID);
        let username = take(K_USERNAME).map(|u| u.trim_start_matches('@').to_owned());
        Session { access, refresh, expires_at, scope, user_id, username, other: map }
    }

    pub(super) fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = self.other.clone();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                map.insert(k.to_owned(), v);
            }
        };
        put(K_ACCESS, self.access.as_ref().map(|t| t.0.clone()));
        put(K_REFRESH, self.refresh.as_ref().map(|t| t.0.clone()));
        put(K_EXPIRES_AT, self.expires_at.map(|t| t.to_string()));
        put(K_SCOPE, self.scope.clone());
        put(K_USER_ID, self.user_id.clone());
        put(K_USERNAME, self.username.clone());
        map
    }

    /// Takes the tokens of a token endpoint answer. A refresh that brings no new refresh
    /// token leaves the old one (it was not rotated then).
    fn absorb(&mut self, answer: TokenAnswer, now: i64) {
        self.access = Some(Token(answer.access_token));
        if let Some(r) = answer.refresh_token.filter(|r| !r.is_empty()) {
            self.refresh = Some(Token(r));
        }
        let expires_in = answer.expires_in.filter(|&s| s > 0).unwrap_or(DEFAULT_EXPIRES_IN);
        self.expires_at = Some(now + expires_in);
        if let Some(scope) = answer.scope.filter(|s| !s.trim().is_empty()) {
            self.scope = Some(scope);
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
}

/// A new PKCE pair: the verifier (43 characters from 32 random bytes) and its S256
/// challenge, `BASE64URL(SHA256(verifier))`, both without padding.
pub fn pkce_pair() -> (String, String) {
    let verifier = base64(&random_bytes(), URL_SAFE, false);
    let challenge = base64(&Sha256::digest(verifier.as_bytes()), URL_SAFE, false);
    (verifier, challenge)
}

/// A random `state` value for the authorize URL (to check on the redirect).
pub fn random_state() -> String {
    base64(&random_bytes()[..24], URL_SAFE, false)
}

/// The URL to send the human's browser to. `authorize_base` is the site
/// ([`AUTHORIZE_BASE`]; an emulator's base in tests) or the whole authorize endpoint; the
/// scopes are [`SCOPES`] and the method S256.
pub fn authorize_url(
    authorize_base: &str,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    code_challenge: &str,
) -> String {
    let base = authorize_base.trim().trim_end_matches('/');
    let endpoint = if base.ends_with("/oauth2/authorize") {
        base.to_owned()
    } else {
        format!("{base}{AUTHORIZE_PATH}")
    };
    let pairs = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", SCOPES),
        ("state", state),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ];
    // Spaces as %20, as X documents the URL (form encoding would make them `+`; a literal
    // `+` is escaped as %2B, so the swap is exact).
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            format!("{k}={}", v.replace('+', "%20"))
        })
        .collect();
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{sep}{}", query.join("&"))
}

/// Exchanges the authorization code (from the redirect) for tokens, then learns the
/// account (`GET /2/users/me`). `api` is the API base ([`super::DEFAULT_API`]). The answer is
/// the session map [`super::X::new`] takes. The code lives 30 s: call this at once.
///
/// When the tokens came but the account could not be read, the session is returned
/// without `user_id`/`username`; the account learns them when it starts.
pub async fn exchange_code(
    http: &reqwest::Client,
    api: &str,
    client_id: &str,
    client_secret: Option<&Secret>,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<BTreeMap<String, String>, NetError> {
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.trim()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let what = "POST /2/oauth2/token (authorization_code)";
    let answer = token_request(http, api, client_id, client_secret, &fields, what).await.map_err(
        |f| match f {
            TokenFailure::Refused(m) => {
                NetError::Rejected(format!("X refused the authorization code: {m}"))
            }
            TokenFailure::Net(e) => e,
        },
    )?;
    let mut session = Session::default();
    session.absorb(answer, chrono::Utc::now().timestamp());
    if let Some(token) = session.access.clone() {
        match super::users_me(http, api, &token).await {
            Ok(me) => {
                session.user_id = Some(me.id);
                session.username = Some(me.username);
            }
            Err(e) => {
                tracing::warn!("logged in to X, but reading the account failed: {}", e.into_net())
            }
        }
    }
    Ok(session.to_map())
}

/// Renews the session with its refresh token (which X then invalidates: the new one is in
/// the updated session, and must be stored before the old session is forgotten).
pub(super) async fn refresh(
    http: &reqwest::Client,
    api: &str,
    client_id: &str,
    client_secret: Option<&Secret>,
    session: &mut Session,
    account: &str,
) -> Result<(), NetError> {
    let Some(refresh) = session.refresh.clone() else {
        return Err(NetError::Unauthorized(format!(
            "the X access token expired and the session has no refresh token (was offline.access granted?): run presencectl login x --account {account}"
        )));
    };
    let fields = [("grant_type", "refresh_token"), ("refresh_token", refresh.0.as_str())];
    let what = "POST /2/oauth2/token (refresh_token)";
    let answer = token_request(http, api, client_id, client_secret, &fields, what)
        .await
        .map_err(|f| match f {
            TokenFailure::Refused(m) => NetError::Unauthorized(format!(
                "X refused the stored refresh token ({m}): run presencectl login x --account {account}"
            )),
            TokenFailure::Net(e) => e,
        })?;
    session.absorb(answer, chrono::Utc::now().timestamp());
    Ok(())
}

#[derive(Debug)]
enum TokenFailure {
    /// The grant (code or refresh token) was refused: logging in again is the only way.
    Refused(String),
    Net(NetError),
}

async fn token_request(
    http: &reqwest::Client,
    api: &str,
    client_id: &str,
    client_secret: Option<&Secret>,
    fields: &[(&str, &str)],
    what: &str,
) -> Result<TokenAnswer, TokenFailure> {
    let url = wire::endpoint(api, &["2", "oauth2", "token"]).map_err(TokenFailure::Net)?;
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    let mut request = http.post(url).header(ACCEPT, "application/json");
    match client_secret {
        Some(secret) => {
            let credentials = format!("{client_id}:{}", secret.expose());
            let mut value = HeaderValue::from_str(&format!(
                "Basic {}",
                base64(credentials.as_bytes(), STANDARD, true)
            ))
            .map_err(|_| {
                TokenFailure::Net(NetError::Unauthorized(
                    "the client secret contains characters not allowed in a header".into(),
                ))
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        None => form.push(("client_id", client_id)),
    }
    let request = request.form(&form).timeout(Duration::from_secs(30));
    // A token request that got no answer may have rotated the refresh token; nothing can
    // tell, so it counts as not done (the next refresh finds out).
    match wire::send(request, what, Effect::Read).await {
        Ok(answer) => wire::decode(&answer.body, what, Effect::Read).map_err(TokenFailure::Net),
        Err(Failure::Status { status, problem, net }) => match status {
            400 | 401 => Err(if problem.is_invalid_grant() || status == 400 {
                TokenFailure::Refused(problem.text().unwrap_or_else(|| format!("HTTP {status}")))
            } else {
                // 401 unauthorized_client: the client id or secret is wrong.
                TokenFailure::Net(NetError::Unauthorized(format!(
                    "X refused the client credentials (client_id, client_secret): {}",
                    problem.text().unwrap_or_else(|| format!("HTTP {status}"))
                )))
            }),
            _ => Err(TokenFailure::Net(net)),
        },
        Err(Failure::Net(e)) => Err(TokenFailure::Net(e)),
    }
}

// ---------------------------------------------------------------------------------------
// Randomness and base64, small enough not to need crates.

/// 32 bytes from the kernel's CSPRNG. Should `/dev/urandom` be unreadable (a sandbox
/// without `/dev`), the standard library's randomly keyed hasher state stands in: its keys
/// come from the OS's random source too.
fn random_bytes() -> [u8; 32] {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok() {
        return bytes;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = Sha256::new();
    for i in 0..8u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.update(h.finish().to_le_bytes());
    }
    hasher.finalize().into()
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(super) fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
pub(super) fn base64_standard(bytes: &[u8]) -> String {
    base64(bytes, STANDARD, true)
}
