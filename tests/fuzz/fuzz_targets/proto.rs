//! The control protocol decoder (`presencectl::proto`) on arbitrary bytes: the frame codec,
//! and every message type as a bincode body. A message that decodes must encode back to the
//! same bytes (the encoding is canonical), and a response must survive `split`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use presencectl::proto::{self, Hello, PartialList, Request, Response, ServerHello, MAX_FRAME};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    round_trip::<Hello>(data);
    round_trip::<ServerHello>(data);
    round_trip::<Request>(data);
    if let Some(response) = round_trip::<Response>(data) {
        check_split(response);
    }
    frames(data);
});

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    data: &[u8],
) -> Option<T> {
    let value: T = proto::decode(data).ok()?;
    let bytes = proto::encode(&value).expect("a decoded message encodes");
    assert_eq!(bytes, data, "not canonical: {value:?}");
    Some(value)
}

/// Frames of a split response reassemble into the response, each within a frame.
fn check_split(response: Response) {
    let frames = proto::split(response.clone()).expect("a decoded response splits");
    let (last, parts) = frames.split_last().expect("at least one frame");
    let mut posts = Vec::new();
    let mut conversations = Vec::new();
    for frame in parts {
        assert!(frame.len() <= MAX_FRAME);
        match proto::decode::<Response>(frame).expect("part decodes") {
            Response::Partial(PartialList::Posts(p)) => posts.extend(p),
            Response::Partial(PartialList::Conversations(c)) => conversations.extend(c),
            other => panic!("not a part: {other:?}"),
        }
    }
    assert!(last.len() <= MAX_FRAME);
    let mut whole = proto::decode::<Response>(last).expect("last frame decodes");
    match &mut whole {
        Response::Posts(p) => {
            posts.append(p);
            *p = posts;
        }
        Response::Conversations(c) => {
            conversations.append(c);
            *c = conversations;
        }
        _ => assert!(parts.is_empty()),
    }
    assert_eq!(whole, response);
}

/// The bytes as a stream, delivered in pieces whose sizes come from the data itself. Every
/// frame decoded is within MAX_FRAME and re-encodes to the bytes it came from.
fn frames(data: &[u8]) {
    let mut codec = proto::codec();
    let mut buf = BytesMut::new();
    let mut consumed = Vec::new();
    let mut rest = data;
    let mut step = 1 + data.first().map_or(0, |b| usize::from(*b) % 64);
    loop {
        let take = step.min(rest.len());
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        step = 1 + step * 7 % 97;
        let eof = rest.is_empty();
        loop {
            let decoded = if eof { codec.decode_eof(&mut buf) } else { codec.decode(&mut buf) };
            match decoded {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME);
                    let _ = proto::decode::<Request>(&frame);
                    let mut out = BytesMut::new();
                    proto::codec().encode(frame.freeze(), &mut out).expect("frame re-encodes");
                    consumed.extend_from_slice(&out);
                }
                Ok(None) => break,
                // A bad length prefix ends the connection.
                Err(_) => return,
            }
        }
        if eof {
            break;
        }
    }
    assert_eq!(consumed, &data[..consumed.len()], "frames do not cover the stream");
}
