//! The control protocol spoken on presenced's Unix socket: the one definition shared by the
//! daemon and `presencectl`.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes (tokio-util's
//! `LengthDelimitedCodec`), at most [`MAX_FRAME`]. Every frame body is bincode 1.3.3 with the
//! explicit [`options`] below: fixed-width little-endian integers, a size limit, no trailing
//! bytes. The first frame each way is a hello ([`Hello`], [`ServerHello`]) whose layout never
//! changes, so any two versions can at least tell each other which versions they speak.
//! After that the client sends [`Request`]s and gets one [`Response`] each.
//!
//! One real frame, the hello of protocol 1 sent by presencectl 0.1.0:
//!
//! ```text
//! 00 00 00 25                                      length 37
//! 50 52 53 4e 43 43 54 4c                          magic "PRSNCCTL"
//! 01 00 00 00                                      protocol version 1 (u32 LE)
//! 11 00 00 00 00 00 00 00                          software string length 17 (u64 LE)
//! 70 72 65 73 65 6e 63 65 63 74 6c 20 30 2e 31 2e 30   "presencectl 0.1.0"
//! ```
//!
//! Enums here are append-only: a new variant goes at the end, an existing one never changes
//! shape, so that the golden-bytes tests at the bottom keep passing. Core types of the daemon
//! are not these types; the daemon converts at its edge.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bincode::Options;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Bumped when a message changes incompatibly (which the append-only rule should make rare).
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side accepts; a longer length prefix closes the connection unread.
pub const MAX_FRAME: usize = 1 << 20;
/// First bytes of every hello, so a stray client of another protocol is recognised at once.
pub const HELLO_MAGIC: [u8; 8] = *b"PRSNCCTL";
/// How long a side waits for the peer's hello before giving up on the connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 8],
    pub version: u32,
    pub software: String,
}

impl Hello {
    pub fn new(software: &str) -> Self {
        Hello { magic: HELLO_MAGIC, version: PROTOCOL_VERSION, software: software.to_owned() }
    }
}

/// The daemon's first frame. `refusal` is set when the daemon will not serve this client
/// (wrong version, not permitted); the daemon closes the connection after sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    pub magic: [u8; 8],
    pub version: u32,
    pub software: String,
    pub refusal: Option<String>,
}

/// The message naming both versions, used by whichever side notices the mismatch.
pub fn version_mismatch(client: u32, daemon: u32) -> String {
    format!(
        "protocol version mismatch: presencectl speaks {client}, presenced speaks {daemon}; \
         use the presencectl that came with this presenced"
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status,
    Posts {
        filter: PostFilter,
    },
    PostAction {
        id: u64,
        action: PostAction,
    },
    Poll,
    /// At most `limit` conversations (0: all), oldest waiting first.
    ListConversations {
        filter: ConversationFilter,
        limit: u32,
    },
    ShowConversation {
        id: u64,
    },
    /// Posts the answer and replies once the network has answered (or the attempt failed).
    Answer {
        id: u64,
        text: String,
    },
    /// Until a unix time, computed by the client in the human's time zone.
    Snooze {
        id: u64,
        until: i64,
    },
    Done {
        id: u64,
    },
    Reopen {
        id: u64,
    },
    /// Starts an OAuth login for an account (X): the daemon answers with the URL to open.
    LoginStart {
        account: String,
        redirect_uri: String,
    },
    /// Finishes it with what the redirect carried; the daemon exchanges the code and keeps
    /// the tokens in its state.
    LoginFinish {
        account: String,
        state: String,
        code: String,
    },
    /// Like [`Request::Poll`], limited to the feeds or to the accounts' mentions.
    PollOnly {
        scope: PollScope,
    },
}

/// What a [`Request::PollOnly`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PollScope {
    /// The feeds (what the daemon's feed timer does).
    Feeds,
    /// Every account's mentions and watched threads.
    Mentions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationFilter {
    Open,
    Snoozed,
    Done,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostFilter {
    /// Articles with an announcement that is not final yet, plus the most recent ones.
    Recent,
    /// Held, pending or in flight.
    Pending,
    Failed,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostAction {
    /// Release held announcements of the article.
    Approve,
    /// Drop the article's held, pending or failed announcements for good.
    Skip,
    /// Try failed announcements again now.
    Retry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Error(ErrorReply),
    Status(StatusReport),
    Posts(Vec<ArticleView>),
    /// A one-line confirmation of an action.
    Done(String),
    Conversations(Vec<ConversationView>),
    Conversation(ConversationDetail),
    /// The first part of a list too long for one frame: more frames follow, the last one
    /// being the ordinary `Posts` or `Conversations` response with the rest.
    Partial(PartialList),
    /// Where to send the human's browser to log in.
    LoginUrl(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartialList {
    Posts(Vec<ArticleView>),
    Conversations(Vec<ConversationView>),
}

/// Splits a response into frames that each fit in [`MAX_FRAME`]: lists too long for one
/// frame go out as `Partial` parts before the final response. Used by the daemon; the
/// client's [`crate::client::Client::call`] puts them back together.
pub fn split(response: Response) -> Result<Vec<Vec<u8>>, ProtoError> {
    // Leaves room for the enum tags and the length prefixes.
    const BUDGET: usize = MAX_FRAME - 1024;
    // Too large shows as bincode's size limit, or as a body over the budget.
    let fits = |encoded: Result<Vec<u8>, ProtoError>| match encoded {
        Ok(body) if body.len() <= BUDGET => Ok(Some(body)),
        Ok(_) | Err(ProtoError::Decode(_)) => Ok(None),
        Err(e) => Err(e),
    };
    if let Some(whole) = fits(encode(&response))? {
        return Ok(vec![whole]);
    }
    fn parts<T: Serialize + Clone>(
        items: Vec<T>,
        wrap_part: fn(Vec<T>) -> Response,
        wrap_last: fn(Vec<T>) -> Response,
        fits: impl Fn(Result<Vec<u8>, ProtoError>) -> Result<Option<Vec<u8>>, ProtoError>,
    ) -> Result<Vec<Vec<u8>>, ProtoError> {
        let mut frames = Vec::new();
        let mut rest = items.as_slice();
        loop {
            // The largest prefix that fits, found by halving from what is left.
            let mut take = rest.len();
            let last = loop {
                let chunk = rest[..take].to_vec();
                let is_last = take == rest.len();
                let body =
                    if is_last { encode(&wrap_last(chunk)) } else { encode(&wrap_part(chunk)) };
                if let Some(body) = fits(body)? {
                    frames.push(body);
                    break is_last;
                }
                if take <= 1 {
                    // One item larger than a frame: the daemon bounds every text it stores,
                    // so this means a bug; say so instead of sending a frame nobody accepts.
                    return Err(ProtoError::Frame(std::io::Error::other(
                        "one list entry is larger than a frame",
                    )));
                }
                take /= 2;
            };
            if last {
                return Ok(frames);
            }
            rest = &rest[take..];
        }
    }
    match response {
        Response::Posts(items) => {
            parts(items, |v| Response::Partial(PartialList::Posts(v)), Response::Posts, fits)
        }
        Response::Conversations(items) => parts(
            items,
            |v| Response::Partial(PartialList::Conversations(v)),
            Response::Conversations,
            fits,
        ),
        _ => Err(ProtoError::Frame(std::io::Error::other("response larger than a frame"))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationView {
    pub id: u64,
    pub account: String,
    pub status: ConversationState,
    /// Handles of everyone else in the thread, first speaker first.
    pub participants: Vec<String>,
    /// Since when the human owes an answer, if they do.
    pub waiting_since: Option<i64>,
    pub snoozed_until: Option<i64>,
    pub last_message: Option<MessageView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationDetail {
    pub conversation: ConversationView,
    /// Oldest first.
    pub messages: Vec<MessageView>,
    /// The longest answer the account accepts, as its network counts, if known.
    pub answer_limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub author: String,
    pub display_name: String,
    pub text: String,
    pub at: i64,
    pub url: Option<String>,
    pub mine: bool,
    /// For the human's answers: how far it got.
    pub delivery: Option<AnnouncementState>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationState {
    Open,
    Snoozed,
    Done,
}

impl ConversationState {
    /// The stable name used in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Open => "open",
            ConversationState::Snoozed => "snoozed",
            ConversationState::Done => "done",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request could not be decoded.
    BadRequest,
    /// No such article, conversation, etc.
    NotFound,
    /// The request is understood but not allowed in the current state.
    Refused,
    /// The daemon failed to carry it out (for example, it cannot write its state).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: i64,
    pub state_file: String,
    /// Set while the daemon cannot write its state; it then posts nothing.
    pub state_error: Option<String>,
    pub feeds: Vec<FeedStatus>,
    pub accounts: Vec<AccountStatus>,
    pub queue: QueueSummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedStatus {
    /// The URL as configured.
    pub url: String,
    /// Where it is fetched from now (differs after a permanent redirect).
    pub current_url: String,
    pub interval_secs: u64,
    pub last_fetch: Option<i64>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub next_fetch: Option<i64>,
    pub articles: u64,
    pub baseline_taken: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatus {
    pub name: String,
    pub kind: String,
    /// "ok", or what is wrong ("unauthorised: ...").
    pub health: String,
    pub posted: u64,
    pub pending: u64,
    pub held: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSummary {
    pub open: u64,
    pub snoozed: u64,
    pub oldest_waiting: Option<i64>,
    pub next_wake: Option<i64>,
    /// Open conversations where someone waits for the human's answer.
    pub waiting: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleView {
    pub id: u64,
    /// The feed's configured URL.
    pub feed: String,
    pub title: String,
    pub url: String,
    pub first_seen: i64,
    pub published: Option<i64>,
    pub accounts: Vec<AnnouncementView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncementView {
    pub account: String,
    pub state: AnnouncementState,
    /// Why it is held, skipped or failed.
    pub detail: Option<String>,
    pub remote_url: Option<String>,
    pub at: Option<i64>,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnnouncementState {
    Posted,
    Pending,
    InFlight,
    Held,
    Failed,
    Skipped,
}

impl AnnouncementState {
    /// The stable name used in `--json` output and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            AnnouncementState::Posted => "posted",
            AnnouncementState::Pending => "pending",
            AnnouncementState::InFlight => "in_flight",
            AnnouncementState::Held => "held",
            AnnouncementState::Failed => "failed",
            AnnouncementState::Skipped => "skipped",
        }
    }
}

/// The bincode configuration of every frame body. Spelled out rather than relying on
/// bincode's defaults so that the encoding cannot drift with a dependency update.
pub fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_FRAME as u64)
        .reject_trailing_bytes()
}

/// The frame codec; both sides must use exactly this.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection closed by peer")]
    Closed,
    #[error("timed out waiting for the peer")]
    Timeout,
    #[error("bad frame: {0}")]
    Frame(std::io::Error),
    #[error("undecodable message: {0}")]
    Decode(#[from] bincode::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtoError> {
    Ok(options().serialize(value)?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    Ok(options().deserialize(bytes)?)
}

/// A framed connection, used by the daemon and the client alike.
#[derive(Debug)]
pub struct Conn<S> {
    framed: Framed<S, LengthDelimitedCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn { framed: Framed::new(stream, codec()) }
    }

    pub async fn send<T: Serialize>(&mut self, value: &T) -> Result<(), ProtoError> {
        self.send_encoded(encode(value)?).await
    }

    /// Sends a body encoded earlier (see [`split`]).
    pub async fn send_encoded(&mut self, body: Vec<u8>) -> Result<(), ProtoError> {
        self.framed.send(bytes::Bytes::from(body)).await.map_err(ProtoError::Frame)
    }

    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, ProtoError> {
        match self.framed.next().await {
            None => Err(ProtoError::Closed),
            Some(Err(e)) => Err(ProtoError::Frame(e)),
            Some(Ok(frame)) => decode(&frame),
        }
    }

    pub async fn recv_within<T: DeserializeOwned>(
        &mut self,
        limit: Duration,
    ) -> Result<T, ProtoError> {
        tokio::time::timeout(limit, self.recv()).await.map_err(|_| ProtoError::Timeout)?
    }

    pub fn into_inner(self) -> S {
        self.framed.into_inner()
    }
}

/// Where the control socket is when nothing says otherwise: the system service's socket for
/// root, else the user service's (`$XDG_RUNTIME_DIR/presenced/control.sock`) if it exists,
/// else the system one, which members of the control group may use.
pub fn default_socket_path(is_root: bool, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    let system = PathBuf::from("/run/presenced/control.sock");
    if is_root {
        return system;
    }
    match xdg_runtime_dir {
        Some(dir) => {
            let user = dir.join("presenced/control.sock");
            if user.exists() || !system.exists() {
                user
            } else {
                system
            }
        }
        None => system,
    }
}

/// The socket of the `presenced@NAME` template instance (see systemd/presenced@.socket).
pub fn instance_socket_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/presenced-{name}/control.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Golden bytes: a failure here means a message changed shape on the wire. Append new
    /// variants instead; old clients and daemons depend on these layouts.
    fn golden<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: T, want: &str) {
        let bytes = encode(&v).unwrap();
        assert_eq!(hex(&bytes), want, "wire layout of {v:?} changed");
        assert_eq!(decode::<T>(&bytes).unwrap(), v);
    }

    #[test]
    fn hello_layout_never_changes() {
        golden(
            Hello::new("presencectl 0.1.0"),
            "5052534e4343544c010000001100000000000000\
             70726573656e636563746c20302e312e30",
        );
        golden(
            ServerHello {
                magic: HELLO_MAGIC,
                version: 1,
                software: "d".into(),
                refusal: Some("no".into()),
            },
            "5052534e4343544c01000000010000000000000064010200000000000000\
             6e6f",
        );
    }

    #[test]
    fn requests_layout() {
        golden(Request::Status, "00000000");
        golden(Request::Posts { filter: PostFilter::Failed }, "0100000002000000");
        golden(
            Request::PostAction { id: 7, action: PostAction::Retry },
            "02000000070000000000000002000000",
        );
        golden(Request::Poll, "03000000");
        golden(
            Request::ListConversations { filter: ConversationFilter::Snoozed, limit: 7 },
            "040000000100000007000000",
        );
        golden(Request::ShowConversation { id: 3 }, "050000000300000000000000");
        golden(
            Request::Answer { id: 3, text: "hi".into() },
            "06000000030000000000000002000000000000006869",
        );
        golden(Request::Snooze { id: 3, until: 256 }, "0700000003000000000000000001000000000000");
        golden(Request::Done { id: 3 }, "080000000300000000000000");
        golden(Request::Reopen { id: 3 }, "090000000300000000000000");
        golden(Request::PollOnly { scope: PollScope::Mentions }, "0c00000001000000");
    }

    #[test]
    fn responses_layout() {
        golden(
            Response::Error(ErrorReply { kind: ErrorKind::NotFound, message: "x".into() }),
            "0000000001000000010000000000000078",
        );
        golden(Response::Done("ok".into()), "0300000002000000000000006f6b");
        let view = ConversationView {
            id: 1,
            account: "m".into(),
            status: ConversationState::Snoozed,
            participants: vec!["a".into()],
            waiting_since: None,
            snoozed_until: Some(2),
            last_message: None,
        };
        golden(
            Response::Conversations(vec![view.clone()]),
            "04000000010000000000000001000000000000000100000000000000\
             6d01000000010000000000000001000000000000006100\
             01020000000000000000",
        );
        golden(
            Response::Conversation(ConversationDetail {
                conversation: view,
                messages: vec![MessageView {
                    author: "a".into(),
                    display_name: "A".into(),
                    text: "t".into(),
                    at: 5,
                    url: None,
                    mine: true,
                    delivery: Some(AnnouncementState::Posted),
                    error: None,
                }],
                answer_limit: Some(500),
            }),
            "05000000010000000000000001000000000000006d0100000001000000000000000100\
             0000000000006100010200000000000000000100000000000000010000000000000061\
             010000000000000041010000000000000074050000000000000000010100000000\
             0001f4010000",
        );
        golden(
            Response::Posts(vec![ArticleView {
                id: 1,
                feed: "f".into(),
                title: "t".into(),
                url: "u".into(),
                first_seen: 2,
                published: None,
                accounts: vec![AnnouncementView {
                    account: "a".into(),
                    state: AnnouncementState::Held,
                    detail: None,
                    remote_url: None,
                    at: Some(3),
                    attempts: 4,
                }],
            }]),
            "02000000010000000000000001000000000000000100000000000000660100000000000000\
             74010000000000000075020000000000000000010000000000000001000000000000006103\
             000000000001030000000000000004000000",
        );
        golden(
            Response::Status(StatusReport {
                version: "v".into(),
                pid: 9,
                started_at: 1,
                state_file: "s".into(),
                state_error: None,
                feeds: vec![],
                accounts: vec![],
                queue: QueueSummary::default(),
            }),
            "01000000010000000000000076090000000100000000000000010000000000000073\
             00000000000000000000000000000000000000000000000000000000000000000000\
             000000000000000000",
        );
    }

    #[test]
    fn oversized_length_prefix_is_refused_unread() {
        use tokio_util::codec::Decoder;
        let mut buf = bytes::BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0, 0][..]);
        assert!(codec().decode(&mut buf).is_err());
    }

    #[test]
    fn long_lists_are_split_into_frames_that_fit() {
        let view = |i: u64| ConversationView {
            id: i,
            account: "m".into(),
            status: ConversationState::Open,
            participants: vec!["someone@example.social".into()],
            waiting_since: Some(1),
            snoozed_until: None,
            last_message: Some(MessageView {
                author: "someone@example.social".into(),
                display_name: "Someone".into(),
                text: "x".repeat(400),
                at: 1,
                url: None,
                mine: false,
                delivery: None,
                error: None,
            }),
        };
        let all: Vec<ConversationView> = (0..10_000).map(view).collect();
        let frames = split(Response::Conversations(all.clone())).unwrap();
        assert!(frames.len() > 4, "{} frames", frames.len());
        let mut got = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            assert!(frame.len() <= MAX_FRAME);
            match decode::<Response>(frame).unwrap() {
                Response::Partial(PartialList::Conversations(part)) => {
                    assert!(i + 1 < frames.len());
                    got.extend(part)
                }
                Response::Conversations(last) => {
                    assert_eq!(i + 1, frames.len());
                    got.extend(last)
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, all);
        assert_eq!(split(Response::Done("ok".into())).unwrap().len(), 1);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&Request::Poll).unwrap();
        bytes.push(0);
        assert!(decode::<Request>(&bytes).is_err());
    }
}
