//! A raw AMQP 0-9-1 publisher over a TCP socket, for tests that must send what no client library
//! would: a content header whose property bytes the test writes itself (short strings that are not
//! UTF-8, header tables nested thousands deep, a header frame as large as the broker accepts), on a
//! connection that negotiated the `frame_max` the test chose, as any uploader may.
//!
//! It speaks just enough of the protocol: the protocol header, a PLAIN login (start, tune with the
//! chosen `frame_max` and no heartbeats, open), one channel in confirm mode, and publishes that wait
//! for their confirm. It consumes nothing; a broker's `channel.close` or `connection.close` ends it.
//!
//! ```ignore
//! let mut p = RawPublisher::connect(&amqp_url(), 131_072).await;
//! let props = Props::new().short(Prop::MessageId, b"\xff\xfe").delivery_mode(2);
//! p.publish(b"", queue.as_bytes(), &props, body).await.unwrap();
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_END: u8 = 0xce;
/// The content-header frame's fixed part: frame header (7), class, weight, body size (12), end (1).
const HEADER_FRAME_OVERHEAD: usize = 7 + 12 + 1;

/// The basic properties, in the order AMQP sends them (bit 15 of the flags first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prop {
    ContentType,
    ContentEncoding,
    Headers,
    DeliveryMode,
    Priority,
    CorrelationId,
    ReplyTo,
    Expiration,
    MessageId,
    Timestamp,
    Type,
    UserId,
    AppId,
    ClusterId,
}

impl Prop {
    /// The properties whose type is a short string.
    pub const SHORT_STRINGS: [Prop; 10] = [
        Prop::ContentType,
        Prop::ContentEncoding,
        Prop::CorrelationId,
        Prop::ReplyTo,
        Prop::Expiration,
        Prop::MessageId,
        Prop::Type,
        Prop::UserId,
        Prop::AppId,
        Prop::ClusterId,
    ];

    fn flag(self) -> u16 {
        1 << (15 - self as u16)
    }
}

/// Property values as raw wire bytes; [`Props::encode`] writes the flags and the values in order.
#[derive(Clone, Debug, Default)]
pub struct Props(std::collections::BTreeMap<Prop, Vec<u8>>);

impl Props {
    pub fn new() -> Props {
        Props::default()
    }

    /// A short-string property: any bytes (at most 255), UTF-8 or not.
    pub fn short(mut self, p: Prop, bytes: &[u8]) -> Props {
        self.0.insert(p, short_string(bytes));
        self
    }

    /// The `headers` table, its entries already encoded (see [`table`]).
    pub fn headers(mut self, table: Vec<u8>) -> Props {
        self.0.insert(Prop::Headers, table);
        self
    }

    pub fn delivery_mode(mut self, mode: u8) -> Props {
        self.0.insert(Prop::DeliveryMode, vec![mode]);
        self
    }

    /// The flags and the values: the part of a content header after class, weight and body size.
    pub fn encode(&self) -> Vec<u8> {
        let flags = self.0.keys().fold(0u16, |f, p| f | p.flag());
        let mut out = flags.to_be_bytes().to_vec();
        for v in self.0.values() {
            out.extend_from_slice(v);
        }
        out
    }
}

/// A short string: its length (one byte) and its bytes.
pub fn short_string(bytes: &[u8]) -> Vec<u8> {
    let len = u8::try_from(bytes.len()).expect("a short string holds at most 255 bytes");
    let mut out = vec![len];
    out.extend_from_slice(bytes);
    out
}

fn long(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("a length fits in 32 bits");
    out.extend_from_slice(&n.to_be_bytes());
}

/// A field table: its length and its entries, each a key (raw bytes, at most 255) and an encoded
/// field value (type byte first, as [`long_string`] or [`nested_arrays`] make).
pub fn table(entries: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in entries {
        body.extend(short_string(k));
        body.extend_from_slice(v);
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    long(&mut out, body.len());
    out.extend(body);
    out
}

/// A field value of type `S` (long string).
pub fn long_string(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![b'S'];
    long(&mut out, bytes.len());
    out.extend_from_slice(bytes);
    out
}

/// A field value of type `A`: an array holding an array ... `depth` arrays in all, the innermost
/// empty. 5 bytes a level, written front to back (no recursion, no copying).
pub fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 * depth);
    for level in 0..depth {
        out.push(b'A');
        long(&mut out, 5 * (depth - 1 - level));
    }
    out
}

/// A field value of type `F`: a table whose one entry (the empty key) holds a table ... `depth`
/// tables in all, the innermost empty. 6 bytes a level (the empty key's length byte included).
pub fn nested_tables(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 * depth);
    for level in 0..depth {
        out.push(b'F');
        long(&mut out, 6 * (depth - 1 - level));
        if level + 1 < depth {
            out.push(0);
        }
    }
    out
}

/// The size of the content-header frame that `props` make (for a frame just under a limit).
pub fn header_frame_len(props: &Props) -> usize {
    HEADER_FRAME_OVERHEAD + props.encode().len()
}

/// One connection with one confirm-mode channel (channel 1).
pub struct RawPublisher {
    stream: TcpStream,
    /// The `frame_max` both sides agreed on.
    pub frame_max: u32,
}

impl RawPublisher {
    /// Connects and logs in to the broker of `url` (`amqp://user:pass@host:port/vhost`), asking for
    /// `frame_max` (the broker's own maximum applies if it is lower). Panics on any failure.
    pub async fn connect(url: &str, frame_max: u32) -> RawPublisher {
        let uri: lapin::uri::AMQPUri = url.parse().expect("an AMQP URL");
        let a = &uri.authority;
        let stream = TcpStream::connect((a.host.as_str(), a.port))
            .await
            .expect("the broker accepts a connection");
        let mut p = RawPublisher {
            stream,
            frame_max: 4096,
        };
        p.write(b"AMQP\x00\x00\x09\x01").await;
        p.expect_method(0, (10, 10)).await; // connection.start
        let mut start_ok = table(&[]);
        start_ok.extend(short_string(b"PLAIN"));
        let login = format!("\0{}\0{}", a.userinfo.username, a.userinfo.password);
        long(&mut start_ok, login.len());
        start_ok.extend_from_slice(login.as_bytes());
        start_ok.extend(short_string(b"en_US"));
        p.method(0, (10, 11), &start_ok).await;
        let tune = p.expect_method(0, (10, 30)).await; // connection.tune
        let channel_max = u16::from_be_bytes([tune[0], tune[1]]);
        let server_max = u32::from_be_bytes([tune[2], tune[3], tune[4], tune[5]]);
        p.frame_max = if server_max == 0 {
            frame_max
        } else {
            frame_max.min(server_max)
        };
        let mut tune_ok = channel_max.to_be_bytes().to_vec();
        tune_ok.extend_from_slice(&p.frame_max.to_be_bytes());
        tune_ok.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
        p.method(0, (10, 31), &tune_ok).await;
        let mut open = short_string(uri.vhost.as_bytes());
        open.extend(short_string(b""));
        open.push(0);
        p.method(0, (10, 40), &open).await;
        p.expect_method(0, (10, 41)).await; // connection.open-ok
        p.method(1, (20, 10), &short_string(b"")).await;
        p.expect_method(1, (20, 11)).await; // channel.open-ok
        p.method(1, (85, 10), &[0]).await;
        p.expect_method(1, (85, 11)).await; // confirm.select-ok
        p
    }

    /// Publishes `body` with the property bytes of `props` and waits for the broker's answer: Ok on
    /// its ack; Err with what it said instead (a nack, or the close of the channel or connection,
    /// after which this publisher is of no more use).
    pub async fn publish(
        &mut self,
        exchange: &[u8],
        routing_key: &[u8],
        props: &Props,
        body: &[u8],
    ) -> Result<(), String> {
        let mut publish = vec![0, 0];
        publish.extend(short_string(exchange));
        publish.extend(short_string(routing_key));
        publish.push(0); // neither mandatory nor immediate
        self.method(1, (60, 40), &publish).await;
        let mut header = 60u16.to_be_bytes().to_vec();
        header.extend_from_slice(&[0, 0]);
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend(props.encode());
        self.frame(FRAME_HEADER, 1, &header).await;
        for chunk in body.chunks(self.frame_max as usize - 8) {
            self.frame(FRAME_BODY, 1, chunk).await;
        }
        let (kind, _, payload) = self.read_frame().await?;
        match (kind, method_id(&payload)) {
            (FRAME_METHOD, (60, 80)) => Ok(()),
            (FRAME_METHOD, (60, 120)) => Err("nack".into()),
            (_, other) => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Closes the connection politely (the broker logs no error).
    pub async fn close(mut self) {
        let mut close = 200u16.to_be_bytes().to_vec();
        close.extend(short_string(b"bye"));
        close.extend_from_slice(&[0, 0, 0, 0]);
        self.method(0, (10, 50), &close).await;
        let _ = self.read_frame().await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the broker takes what is sent");
    }

    async fn frame(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        let mut f = Vec::with_capacity(payload.len() + 8);
        f.push(kind);
        f.extend_from_slice(&channel.to_be_bytes());
        long(&mut f, payload.len());
        f.extend_from_slice(payload);
        f.push(FRAME_END);
        self.write(&f).await;
    }

    async fn method(&mut self, channel: u16, (class, method): (u16, u16), args: &[u8]) {
        let mut p = class.to_be_bytes().to_vec();
        p.extend_from_slice(&method.to_be_bytes());
        p.extend_from_slice(args);
        self.frame(FRAME_METHOD, channel, &p).await;
    }

    /// Reads frames until a method arrives; it must be `want` on `channel`: its arguments.
    async fn expect_method(&mut self, channel: u16, want: (u16, u16)) -> Vec<u8> {
        let (kind, ch, payload) = self.read_frame().await.unwrap_or_else(|e| panic!("{e}"));
        let got = method_id(&payload);
        assert!(
            kind == FRAME_METHOD && ch == channel && got == want,
            "expected method {want:?} on channel {channel}, got frame {kind} {got:?} on {ch}"
        );
        payload[4..].to_vec()
    }

    /// The next frame: type, channel, payload; an error if the broker closed the channel or the
    /// connection (with its code and text).
    async fn read_frame(&mut self) -> Result<(u8, u16, Vec<u8>), String> {
        let mut head = [0u8; 7];
        self.stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        self.stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        payload.pop();
        let channel = u16::from_be_bytes([head[1], head[2]]);
        if head[0] == FRAME_METHOD && matches!(method_id(&payload), (10, 50) | (20, 40)) {
            let code = u16::from_be_bytes([payload[4], payload[5]]);
            let len = payload[6] as usize;
            let text = String::from_utf8_lossy(&payload[7..7 + len]);
            return Err(format!("closed by the broker: {code} {text}"));
        }
        Ok((head[0], channel, payload))
    }
}

fn method_id(payload: &[u8]) -> (u16, u16) {
    if payload.len() < 4 {
        return (0, 0);
    }
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    )
}
