//! The caps, each at its limit and one past it; a 50 MB element; XXE and "billion laughs".

use std::io::{BufReader, Read};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use super::tests::{odm, read_with};
use super::*;

fn small(cap: usize) -> Limits {
    Limits {
        max_event_bytes: cap,
        ..Limits::default()
    }
}

/// A document whose first element's piece of the given kind is exactly `size` bytes.
fn with_piece(piece: Piece, size: usize) -> String {
    let fill = |overhead: usize| "x".repeat(size - overhead);
    match piece {
        Piece::StartTag => odm(&format!("<A V=\"{}\"/>", fill("<A V=\"\"/>".len()))),
        Piece::EndTag => odm(&format!("<A></A{}>", " ".repeat(size - "</A>".len()))),
        Piece::Text => odm(&format!("<A>{}</A>", fill(0))),
        Piece::Cdata => odm(&format!(
            "<A><![CDATA[{}]]></A>",
            fill("<![CDATA[]]>".len())
        )),
        Piece::Comment => odm(&format!("<A><!--{}--></A>", fill("<!---->".len()))),
        Piece::ProcessingInstruction => odm(&format!("<A><?pi {}?></A>", fill("<?pi ?>".len()))),
        Piece::Doctype | Piece::Reference | Piece::Name => unreachable!(),
    }
}

#[test]
fn each_piece_may_be_as_large_as_the_cap_and_no_larger() {
    let cap = 1000;
    for piece in [
        Piece::StartTag,
        Piece::EndTag,
        Piece::Text,
        Piece::Cdata,
        Piece::Comment,
        Piece::ProcessingInstruction,
    ] {
        read_with(with_piece(piece, cap).as_bytes(), small(cap))
            .unwrap_or_else(|e| panic!("{piece:?} of the cap: {e}"));
        let e = read_with(with_piece(piece, cap + 1).as_bytes(), small(cap)).unwrap_err();
        assert_eq!(e.kind, Refusal::TooLarge { piece, cap }, "{piece:?}");
        // The piece starts after the root's start tag, on line 1.
        assert_eq!(e.at.line, 1);
        assert!(e.at.column > 40, "{piece:?} at {}", e.at);
    }
}

#[test]
fn text_split_by_references_is_capped_as_a_whole_by_read_text() {
    let cap = 100;
    let body = |n: usize| odm(&format!("<A>{}</A>", "x&amp;".repeat(n)));
    let read_a = |doc: String| {
        let mut r = XmlReader::new(std::io::Cursor::new(doc.into_bytes()), small(cap));
        r.next_token().unwrap();
        r.next_token().unwrap();
        let mut text = String::new();
        r.read_text(&mut text).map(|_| text.len())
    };
    assert_eq!(read_a(body(50)), Ok(100));
    let e = read_a(body(51)).unwrap_err();
    assert_eq!(
        e.kind,
        Refusal::TooLarge {
            piece: Piece::Text,
            cap
        }
    );
}

#[test]
fn names_and_namespaces_may_be_as_long_as_their_cap_and_no_longer() {
    let name = |n: usize| "N".repeat(n);
    let cap = MAX_NAME_BYTES;
    let too_long = Refusal::TooLarge {
        piece: Piece::Name,
        cap,
    };
    let ns = |n: usize| format!("urn:{}", "x".repeat(n - 4));
    for (ok, bad) in [
        (
            odm(&format!("<{} />", name(cap))),
            odm(&format!("<{} />", name(cap + 1))),
        ),
        (
            odm(&format!("<A {}=\"1\"/>", name(cap))),
            odm(&format!("<A {}=\"1\"/>", name(cap + 1))),
        ),
        (
            odm(&format!("<A xmlns:v=\"{}\"/>", ns(cap))),
            odm(&format!("<A xmlns:v=\"{}\"/>", ns(cap + 1))),
        ),
    ] {
        read_with(ok.as_bytes(), Limits::default()).unwrap();
        let e = read_with(bad.as_bytes(), Limits::default()).unwrap_err();
        assert_eq!(e.kind, too_long);
    }
}

#[test]
fn nesting_may_be_as_deep_as_the_cap_and_no_deeper() {
    let limits = Limits {
        max_depth: 10,
        ..Limits::default()
    };
    let nest = |depth: usize| {
        odm(&format!(
            "{}{}",
            "<A>".repeat(depth - 1),
            "</A>".repeat(depth - 1)
        ))
    };
    read_with(nest(10).as_bytes(), limits).unwrap();
    let e = read_with(nest(11).as_bytes(), limits).unwrap_err();
    assert_eq!(e.kind, Refusal::TooDeep { cap: 10 });
    assert_eq!(e.at.column, 1 + (odm("").len() - 6 + 9 * 3) as u64);
}

#[test]
fn attributes_may_be_as_many_as_the_cap_and_no_more() {
    let limits = Limits {
        max_attributes: 20,
        ..Limits::default()
    };
    // Namespace declarations count: the root has xmlns and ODMVersion.
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}=\"{i}\"")).collect::<String>();
    read_with(odm(&format!("<A{}/>", attrs(20))).as_bytes(), limits).unwrap();
    let root = |n: usize| format!("<ODM xmlns=\"{ODM13_NS}\"{}/>", attrs(n));
    read_with(root(19).as_bytes(), limits).unwrap();
    let e = read_with(root(20).as_bytes(), limits).unwrap_err();
    assert_eq!(e.kind, Refusal::TooManyAttributes { cap: 20 });
    let e = read_with(odm(&format!("<A{}/>", attrs(21))).as_bytes(), limits).unwrap_err();
    assert_eq!(e.kind, Refusal::TooManyAttributes { cap: 20 });
}

/// A 50 MB input made as it is read: `head`, then `fill` bytes of `byte`, then `tail`. `read`
/// counts what was read from it.
struct Huge {
    head: Vec<u8>,
    fill: u64,
    byte: u8,
    tail: Vec<u8>,
    pos: u64,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Read for Huge {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let head = self.head.len() as u64;
        let mut n = 0;
        while n < out.len() {
            let p = self.pos;
            out[n] = if p < head {
                self.head[p as usize]
            } else if p < head + self.fill {
                self.byte
            } else if let Some(b) = self.tail.get((p - head - self.fill) as usize) {
                *b
            } else {
                break;
            };
            n += 1;
            self.pos += 1;
        }
        self.read.set(self.pos);
        Ok(n)
    }
}

#[test]
fn a_50_mb_element_is_refused_after_about_the_cap_in_well_under_a_second() {
    let cap = Limits::default().max_event_bytes;
    let open = odm("");
    let root = &open[..open.len() - 6];
    for (head, byte, tail, piece) in [
        (format!("{root}<A>"), b'x', "</A></ODM>", Piece::Text),
        (
            format!("{root}<A V=\""),
            b'x',
            "\"/></ODM>",
            Piece::StartTag,
        ),
        (format!("{root}<!--"), b'-', "--></ODM>", Piece::Comment),
        (format!("{root}<![CDATA["), b'x', "]]></ODM>", Piece::Cdata),
    ] {
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let input = Huge {
            head: head.into_bytes(),
            fill: 50 * 1024 * 1024,
            byte,
            tail: tail.as_bytes().to_vec(),
            pos: 0,
            read: read.clone(),
        };
        let started = Instant::now();
        let mut r = XmlReader::new(BufReader::with_capacity(8192, input), Limits::default());
        let e = loop {
            match r.next_token() {
                Ok(Token::Eof) => panic!("read"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        let took = started.elapsed();
        assert_eq!(e.kind, Refusal::TooLarge { piece, cap }, "{piece:?}");
        assert!(took < Duration::from_millis(500), "{piece:?} took {took:?}");
        // Read: the cap and at most two chunks of the source past it, never the 50 MB.
        let read = r.bytes_read();
        assert!(
            read > cap as u64 && read < cap as u64 + 200_000,
            "{piece:?}: {read}"
        );
        // Held: the parser's buffer never grew past the cap.
        assert!(
            r.buf.capacity() <= 2 * cap,
            "{piece:?}: {}",
            r.buf.capacity()
        );
    }
}

#[test]
fn billion_laughs_is_refused_at_once() {
    let mut doc = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE ODM [\n<!ENTITY lol \"lol\">\n");
    doc.push_str("<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n");
    for i in 2..10 {
        let prev = format!("&lol{};", i - 1).repeat(10);
        doc.push_str(&format!("<!ENTITY lol{i} \"{prev}\">\n"));
    }
    doc.push_str("]>\n");
    doc.push_str(&odm("<A V=\"&lol9;\">&lol9;</A>"));
    let started = Instant::now();
    let e = read_with(doc.as_bytes(), Limits::default()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(e.kind, Refusal::Doctype);
    assert_eq!(e.at, Position { line: 2, column: 1 });
}

/// An XXE document names a file that exists (a secret inside), a FIFO (opening it to read would
/// block until a writer comes: the read would hang) and a listener on this machine (which
/// records any connection). Reading it reads none and connects to none.
#[test]
fn xxe_reads_no_file_and_opens_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "SECRET-MARKER-42").unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/x.dtd");
    let docs = [
        format!(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE ODM [\n<!ENTITY s SYSTEM \"file://{}\">\n<!ENTITY f SYSTEM \"file://{}\">\n<!ENTITY h SYSTEM \"{url}\">\n<!ENTITY % p SYSTEM \"{url}\"> %p;\n]>\n{}",
            secret.display(),
            fifo.display(),
            odm("<A V=\"&s;\">&s;&f;&h;</A>")
        ),
        format!("<!DOCTYPE ODM SYSTEM \"{url}\">{}", odm("")),
        format!(
            "<!DOCTYPE ODM PUBLIC \"-//x//y\" \"file://{}\">{}",
            fifo.display(),
            odm("")
        ),
    ];
    for doc in docs {
        let (done, wait) = std::sync::mpsc::channel();
        let input = doc.clone();
        std::thread::spawn(move || {
            let _ = done.send(read_with(input.as_bytes(), Limits::default()));
        });
        let result = wait
            .recv_timeout(Duration::from_secs(5))
            .expect("finished: no FIFO opened");
        let e = result.unwrap_err();
        assert_eq!(e.kind, Refusal::Doctype, "{doc}");
        assert!(!format!("{e} {e:?}").contains("SECRET-MARKER"));
    }
    // The reads are over, and a connection to this machine is in the accept queue by the time
    // connect() returns: none is there.
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the reader connected to the listener"
    );
    // Entities without a DOCTYPE are no more than bad references.
    let e = read_with(odm("<A>&s;</A>").as_bytes(), Limits::default()).unwrap_err();
    assert_eq!(e.kind, Refusal::Malformed(Malformed::BadReference));
}
