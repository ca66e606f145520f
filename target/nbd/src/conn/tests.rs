//! Whole conversations with the connection, driven by a few lines of in-test client.

use super::*;
use crate::spec::{
    CHUNK_HEADER_LEN, Chunk, Cmd, Cookie, Errno, Info, InfoRequest, MetaRequest, Opt, OptionHeader,
    Rep, RequestHeader, SIMPLE_REPLY_LEN, cmd_flags, state, tx,
};

fn export(name: &str, id: u64, read_only: bool) -> ExportInfo {
    ExportInfo {
        id,
        name: name.into(),
        description: format!("volume {name}"),
        size: 1 << 20,
        block_size: 512,
        preferred_block_size: 4096,
        read_only,
        trim: true,
    }
}

fn catalog() -> Vec<ExportInfo> {
    vec![export("vol", 1, false), export("ro", 2, true)]
}

/// A connection and what it sent, with helpers to talk to it.
struct Client {
    c: Connection,
    cat: Vec<ExportInfo>,
    /// Bytes from the server not yet parsed.
    got: Vec<u8>,
}

fn opt(option: Opt, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    OptionHeader {
        option,
        length: data.len() as u32,
    }
    .encode(&mut b);
    b.extend_from_slice(data);
    b
}

fn info_data(name: &str, reqs: &[Info]) -> Vec<u8> {
    let mut b = Vec::new();
    InfoRequest {
        name,
        requests: reqs.iter().copied().collect(),
    }
    .encode(&mut b);
    b
}

fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    MetaRequest {
        name,
        queries: queries.to_vec(),
    }
    .encode(&mut b);
    b
}

fn req(cmd: Cmd, flags: u16, cookie: u64, offset: u64, length: u32) -> Vec<u8> {
    let mut b = Vec::new();
    RequestHeader {
        flags,
        cmd,
        cookie: Cookie(cookie),
        offset,
        length,
    }
    .encode(&mut b);
    b
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// One option reply: (option, type, data).
type OptReply = (u32, u32, Vec<u8>);

/// One transmission reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple {
        error: u32,
        cookie: u64,
    },
    Chunk {
        flags: u16,
        kind: u16,
        cookie: u64,
        payload: Vec<u8>,
    },
}

impl Client {
    fn with(cfg: ConnConfig, client_flags: u32) -> Client {
        let mut cl = Client {
            c: Connection::new(cfg),
            cat: catalog(),
            got: Vec::new(),
        };
        let greeting = cl.take(18);
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        assert_eq!(&greeting[8..16], b"IHAVEOPT");
        assert_eq!(&greeting[16..], &[0, 3], "FIXED_NEWSTYLE | NO_ZEROES");
        cl.send(&client_flags.to_be_bytes());
        cl
    }

    fn new() -> Client {
        Client::with(ConnConfig::default(), 3)
    }

    fn send(&mut self, b: &[u8]) -> usize {
        let n = self.c.receive(b, &self.cat);
        let mut out = Vec::new();
        self.c.transmit(&mut out);
        self.got.extend_from_slice(&out);
        n
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        self.c.transmit(&mut out);
        self.got.extend_from_slice(&out);
        assert!(
            self.got.len() >= n,
            "wanted {n} bytes, have {}",
            self.got.len()
        );
        self.got.drain(..n).collect()
    }

    fn flush(&mut self) {
        let mut out = Vec::new();
        self.c.transmit(&mut out);
        self.got.extend_from_slice(&out);
    }

    fn opt_reply(&mut self) -> OptReply {
        let h = self.take(20);
        assert_eq!(be64(&h), 0x0003_e889_0455_65a9, "option reply magic");
        let len = be32(&h[16..]) as usize;
        (be32(&h[8..]), be32(&h[12..]), self.take(len))
    }

    /// Sends an option and collects replies up to the final one.
    fn option(&mut self, option: Opt, data: &[u8]) -> Vec<OptReply> {
        self.send(&opt(option, data));
        let mut all = Vec::new();
        loop {
            let r = self.opt_reply();
            assert_eq!(r.0, option.0, "reply to the option asked");
            let fin = Rep(r.1) == Rep::ACK || Rep(r.1).is_error();
            all.push(r);
            if fin {
                return all;
            }
        }
    }

    fn reply(&mut self) -> Reply {
        self.flush();
        let magic = be32(&self.got);
        if magic == 0x6744_6698 {
            let h = self.take(SIMPLE_REPLY_LEN);
            Reply::Simple {
                error: be32(&h[4..]),
                cookie: be64(&h[8..]),
            }
        } else {
            assert_eq!(magic, 0x668e_33ef, "reply magic");
            let h = self.take(CHUNK_HEADER_LEN);
            let len = be32(&h[16..]) as usize;
            Reply::Chunk {
                flags: u16::from_be_bytes([h[4], h[5]]),
                kind: u16::from_be_bytes([h[6], h[7]]),
                cookie: be64(&h[8..]),
                payload: self.take(len),
            }
        }
    }

    fn simple_read(&mut self, len: usize) -> (u32, u64, Vec<u8>) {
        let h = self.take(SIMPLE_REPLY_LEN);
        assert_eq!(be32(&h), 0x6744_6698);
        let error = be32(&h[4..]);
        let data = if error == 0 {
            self.take(len)
        } else {
            Vec::new()
        };
        (error, be64(&h[8..]), data)
    }

    fn event(&mut self) -> Option<Event> {
        self.c.next_event()
    }

    fn command(&mut self) -> Command {
        match self.event() {
            Some(Event::Command(c)) => c,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    /// GO on `name` (after structured replies and the allocation context when `structured`).
    fn go(name: &str, structured: bool) -> Client {
        let mut cl = Client::new();
        if structured {
            let r = cl.option(Opt::STRUCTURED_REPLY, &[]);
            assert_eq!(Rep(r[0].1), Rep::ACK);
            let r = cl.option(
                Opt::SET_META_CONTEXT,
                &meta_data(name, &["base:allocation"]),
            );
            assert_eq!(Rep(r.last().expect("final").1), Rep::ACK);
        }
        let r = cl.option(Opt::GO, &info_data(name, &[Info::BLOCK_SIZE]));
        assert_eq!(Rep(r.last().expect("final").1), Rep::ACK, "{r:?}");
        match cl.event() {
            Some(Event::Attach(e)) => assert_eq!(e.name, name),
            other => panic!("{other:?}"),
        }
        cl
    }
}

fn error_of(r: &Reply) -> u32 {
    match r {
        Reply::Simple { error, .. } => *error,
        Reply::Chunk { kind, payload, .. } => {
            assert!(kind & 0x8000 != 0, "error chunk, got type {kind}");
            be32(payload)
        }
    }
}

#[test]
fn unknown_client_flags_end_the_session() {
    let mut cl = Client::with(ConnConfig::default(), 0);
    assert!(!cl.c.is_closed(), "plain newstyle flags are accepted");
    let mut cl2 = Client {
        c: Connection::new(ConnConfig::default()),
        cat: catalog(),
        got: Vec::new(),
    };
    cl2.take(18);
    cl2.send(&4u32.to_be_bytes());
    assert_eq!(cl2.event(), Some(Event::Close));
    assert!(cl2.c.is_closed());
    // Garbage instead of an option header is a hard disconnect.
    cl.send(b"NOTANOPTIONHEADER");
    assert_eq!(cl.event(), Some(Event::Close));
}

#[test]
fn export_name_with_and_without_zero_padding() {
    for (flags, padding) in [(3u32, 0usize), (1, 124)] {
        let mut cl = Client::with(ConnConfig::default(), flags);
        cl.send(&opt(Opt::EXPORT_NAME, b"vol"));
        let r = cl.take(10 + padding);
        assert_eq!(be64(&r), 1 << 20);
        let f = u16::from_be_bytes([r[8], r[9]]);
        assert_eq!(
            f,
            tx::HAS_FLAGS
                | tx::SEND_FLUSH
                | tx::SEND_FUA
                | tx::SEND_TRIM
                | tx::SEND_WRITE_ZEROES
                | tx::CAN_MULTI_CONN
                | tx::SEND_CACHE
        );
        assert!(r[10..].iter().all(|&b| b == 0));
        assert!(matches!(cl.event(), Some(Event::Attach(e)) if e.id == 1));
        assert!(cl.got.is_empty(), "nothing more");
    }
    // An unknown name cannot be answered: the session ends.
    let mut cl = Client::new();
    cl.send(&opt(Opt::EXPORT_NAME, b"nope"));
    assert_eq!(cl.event(), Some(Event::Close));
    assert!(cl.got.is_empty());
}

#[test]
fn abort_is_acknowledged_then_closed() {
    let mut cl = Client::new();
    let r = cl.option(Opt::ABORT, &[]);
    assert_eq!(Rep(r[0].1), Rep::ACK);
    assert_eq!(cl.event(), Some(Event::Close));
    // Anything after is ignored.
    assert_eq!(cl.send(&opt(Opt::LIST, &[])), 16);
    assert!(cl.got.is_empty());
}

#[test]
fn list_names_every_export_with_its_description() {
    let mut cl = Client::new();
    let r = cl.option(Opt::LIST, &[]);
    assert_eq!(r.len(), 3);
    for (reply, name) in r.iter().zip(["vol", "ro"]) {
        assert_eq!(Rep(reply.1), Rep::SERVER);
        let n = be32(&reply.2) as usize;
        assert_eq!(&reply.2[4..4 + n], name.as_bytes());
        assert_eq!(&reply.2[4 + n..], format!("volume {name}").as_bytes());
    }
    assert_eq!(Rep(r[2].1), Rep::ACK);
    let r = cl.option(Opt::LIST, b"x");
    assert_eq!(Rep(r[0].1), Rep::ERR_INVALID);
}

#[test]
fn starttls_is_refused_by_policy_and_unknown_options_are_unsupported() {
    let mut cl = Client::new();
    let r = cl.option(Opt::STARTTLS, &[]);
    assert_eq!(Rep(r[0].1), Rep::ERR_POLICY);
    assert!(String::from_utf8_lossy(&r[0].2).contains("TLS"));
    for o in [Opt::PEEK_EXPORT, Opt::EXTENDED_HEADERS, Opt(0x4242)] {
        let r = cl.option(o, b"some data that is skipped");
        assert_eq!(Rep(r[0].1), Rep::ERR_UNSUP, "{o:?}");
    }
    // Negotiation goes on.
    let r = cl.option(Opt::GO, &info_data("vol", &[]));
    assert_eq!(Rep(r.last().expect("final").1), Rep::ACK);
}

#[test]
fn info_describes_go_enters_transmission() {
    let mut cl = Client::new();
    let r = cl.option(
        Opt::INFO,
        &info_data("vol", &[Info::NAME, Info::DESCRIPTION, Info::BLOCK_SIZE]),
    );
    let kinds: Vec<u16> = r[..r.len() - 1]
        .iter()
        .map(|x| {
            assert_eq!(Rep(x.1), Rep::INFO);
            u16::from_be_bytes([x.2[0], x.2[1]])
        })
        .collect();
    assert_eq!(kinds, vec![0, 1, 2, 3]);
    let export = &r[0].2;
    assert_eq!(export.len(), 12);
    assert_eq!(be64(&export[2..]), 1 << 20);
    assert_eq!(&r[1].2[2..], b"vol");
    assert_eq!(&r[2].2[2..], b"volume vol");
    let sizes = &r[3].2;
    assert_eq!(
        (be32(&sizes[2..]), be32(&sizes[6..]), be32(&sizes[10..])),
        (512, 4096, 32 << 20)
    );
    assert_eq!(Rep(r[4].1), Rep::ACK);
    assert_eq!(cl.event(), None, "INFO stays in negotiation");
    // Unknown export, malformed data.
    let r = cl.option(Opt::INFO, &info_data("nope", &[]));
    assert_eq!(Rep(r[0].1), Rep::ERR_UNKNOWN);
    let r = cl.option(Opt::GO, &[0, 0, 0, 99, 0, 0]);
    assert_eq!(Rep(r[0].1), Rep::ERR_INVALID);
    let r = cl.option(Opt::GO, &info_data("nope", &[]));
    assert_eq!(Rep(r[0].1), Rep::ERR_UNKNOWN);
    // Still negotiating: GO on a real export.
    let r = cl.option(Opt::GO, &info_data("ro", &[]));
    let flags = u16::from_be_bytes([r[0].2[10], r[0].2[11]]);
    assert!(flags & tx::READ_ONLY != 0);
    assert!(flags & (tx::SEND_TRIM | tx::SEND_WRITE_ZEROES) == 0);
    assert!(matches!(cl.event(), Some(Event::Attach(e)) if e.name == "ro"));
    assert_eq!(cl.c.export().map(|e| e.id), Some(2));
}

#[test]
fn structured_replies_negotiate_once_and_take_no_data() {
    let mut cl = Client::new();
    let r = cl.option(Opt::STRUCTURED_REPLY, b"x");
    assert_eq!(Rep(r[0].1), Rep::ERR_INVALID);
    assert!(!cl.c.structured());
    let r = cl.option(Opt::STRUCTURED_REPLY, &[]);
    assert_eq!(Rep(r[0].1), Rep::ACK);
    let r = cl.option(Opt::STRUCTURED_REPLY, &[]);
    assert_eq!(Rep(r[0].1), Rep::ERR_INVALID);
    assert!(cl.c.structured());
    // DF is advertised with structured replies.
    let r = cl.option(Opt::INFO, &info_data("vol", &[]));
    let flags = u16::from_be_bytes([r[0].2[10], r[0].2[11]]);
    assert!(flags & tx::SEND_DF != 0);
}

#[test]
fn meta_contexts_list_and_set_base_allocation() {
    let mut cl = Client::new();
    let r = cl.option(Opt::LIST_META_CONTEXT, &meta_data("vol", &[]));
    assert_eq!(Rep(r[0].1), Rep::ERR_INVALID, "structured replies first");
    let r = cl.option(
        Opt::SET_META_CONTEXT,
        &meta_data("vol", &["base:allocation"]),
    );
    assert_eq!(Rep(r[0].1), Rep::ERR_INVALID, "structured replies first");
    cl.option(Opt::STRUCTURED_REPLY, &[]);
    for queries in [&[][..], &["base:"][..], &["base:allocation"][..]] {
        let r = cl.option(Opt::LIST_META_CONTEXT, &meta_data("vol", queries));
        assert_eq!(r.len(), 2, "{queries:?}");
        assert_eq!(Rep(r[0].1), Rep::META_CONTEXT);
        assert_eq!(&r[0].2[4..], b"base:allocation");
        assert_eq!(Rep(r[1].1), Rep::ACK);
    }
    // Unknown namespaces and leaves are ignored; `base:` selects nothing.
    for queries in [
        &["qemu:dirty-bitmap:b"][..],
        &["base:nothing"][..],
        &["base:"][..],
    ] {
        let r = cl.option(Opt::SET_META_CONTEXT, &meta_data("vol", queries));
        assert_eq!(r.len(), 1, "{queries:?}");
        assert_eq!(Rep(r[0].1), Rep::ACK);
    }
    let r = cl.option(Opt::LIST_META_CONTEXT, &meta_data("nope", &[]));
    assert_eq!(Rep(r[0].1), Rep::ERR_UNKNOWN);
    let r = cl.option(Opt::SET_META_CONTEXT, &[1, 2, 3]);
    assert_eq!(Rep(r[0].1), Rep::ERR_INVALID);
    let r = cl.option(
        Opt::SET_META_CONTEXT,
        &meta_data("vol", &["x-other:thing", "base:allocation"]),
    );
    assert_eq!(Rep(r[0].1), Rep::META_CONTEXT);
    assert_eq!(be32(&r[0].2), ALLOCATION_CONTEXT_ID);
    assert_eq!(Rep(r[1].1), Rep::ACK);
}

#[test]
fn block_status_needs_the_context_on_the_same_export() {
    // Selected on "ro", then GO on "vol": no context there.
    let mut cl = Client::new();
    cl.option(Opt::STRUCTURED_REPLY, &[]);
    cl.option(
        Opt::SET_META_CONTEXT,
        &meta_data("ro", &["base:allocation"]),
    );
    cl.option(Opt::GO, &info_data("vol", &[]));
    cl.event();
    cl.send(&req(Cmd::BLOCK_STATUS, 0, 1, 0, 4096));
    assert_eq!(error_of(&cl.reply()), Errno::EINVAL.0);
    // The same export: a command, answered with extents.
    let mut cl = Client::go("vol", true);
    cl.send(&req(Cmd::BLOCK_STATUS, cmd_flags::REQ_ONE, 9, 512, 8192));
    let c = cl.command();
    assert_eq!(c.op, Op::BlockStatus { req_one: true });
    assert_eq!((c.cookie, c.offset, c.length), (Cookie(9), 512, 8192));
    cl.c.reply_block_status(
        c.cookie,
        &[Extent {
            length: 8192,
            flags: state::HOLE | state::ZERO,
        }],
    );
    match cl.reply() {
        Reply::Chunk {
            flags,
            kind,
            cookie,
            payload,
        } => {
            assert_eq!((flags, Chunk(kind), cookie), (1, Chunk::BLOCK_STATUS, 9));
            assert_eq!(payload.len(), 12);
            assert_eq!(be32(&payload), ALLOCATION_CONTEXT_ID);
            assert_eq!((be32(&payload[4..]), be32(&payload[8..])), (8192, 3));
        }
        other => panic!("{other:?}"),
    }
    // Empty range.
    cl.send(&req(Cmd::BLOCK_STATUS, 0, 10, 0, 0));
    assert_eq!(error_of(&cl.reply()), Errno::EINVAL.0);
}

#[test]
fn every_command_becomes_an_event_with_its_flags() {
    let mut cl = Client::go("vol", true);
    let mut b = Vec::new();
    b.extend(req(Cmd::READ, cmd_flags::DF, 1, 0, 4096));
    b.extend(req(Cmd::WRITE, cmd_flags::FUA, 2, 512, 1024));
    b.extend(vec![0xab; 1024]);
    b.extend(req(Cmd::FLUSH, 0, 3, 0, 0));
    b.extend(req(Cmd::TRIM, cmd_flags::FUA, 4, 1024, 512));
    b.extend(req(
        Cmd::WRITE_ZEROES,
        cmd_flags::NO_HOLE | cmd_flags::FUA,
        5,
        2048,
        4096,
    ));
    b.extend(req(Cmd::CACHE, 0, 6, 0, 65536));
    b.extend(req(Cmd::BLOCK_STATUS, 0, 7, 0, 1 << 20));
    // Byte by byte: commands appear only once whole.
    let mut buf = Vec::new();
    for &x in &b {
        buf.push(x);
        let n = cl.send(&buf);
        buf.drain(..n);
    }
    assert!(buf.is_empty());
    let ops: Vec<(u64, Op)> = (0..7)
        .map(|_| {
            let c = cl.command();
            (c.cookie.0, c.op)
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            (1, Op::Read { df: true }),
            (
                2,
                Op::Write {
                    data: vec![0xab; 1024],
                    fua: true
                }
            ),
            (3, Op::Flush),
            (4, Op::Trim { fua: true }),
            (
                5,
                Op::WriteZeroes {
                    no_hole: true,
                    fua: true
                }
            ),
            (6, Op::Cache),
            (7, Op::BlockStatus { req_one: false }),
        ]
    );
    assert_eq!(cl.c.outstanding(), 7);
    assert!(cl.got.is_empty(), "no reply before the driver answers");
}

#[test]
fn refused_requests_get_the_spec_errors() {
    for structured in [false, true] {
        let mut cl = Client::go("vol", structured);
        let cases: Vec<(Vec<u8>, Errno)> = vec![
            (req(Cmd::READ, 0, 1, 1 << 20, 512), Errno::EINVAL),
            (req(Cmd::READ, 0, 2, u64::MAX - 100, 512), Errno::EINVAL),
            (req(Cmd::TRIM, 0, 3, (1 << 20) - 512, 1024), Errno::EINVAL),
            (req(Cmd::WRITE_ZEROES, 0, 4, 1 << 20, 512), Errno::ENOSPC),
            (req(Cmd::CACHE, 0, 5, 1 << 21, 512), Errno::EINVAL),
            (req(Cmd::READ, 0, 6, 100, 512), Errno::EINVAL),
            (req(Cmd::READ, 0, 7, 0, 100), Errno::EINVAL),
            (req(Cmd(99), 0, 8, 0, 0), Errno::EINVAL),
            (req(Cmd::RESIZE, 0, 9, 0, 0), Errno::EINVAL),
            (req(Cmd::FLUSH, cmd_flags::NO_HOLE, 10, 0, 0), Errno::EINVAL),
            (
                req(Cmd::READ, cmd_flags::REQ_ONE, 11, 0, 512),
                Errno::EINVAL,
            ),
            (
                req(Cmd::WRITE_ZEROES, cmd_flags::FAST_ZERO, 12, 0, 512),
                Errno::EINVAL,
            ),
            (req(Cmd::READ, 0x8000, 13, 0, 512), Errno::EINVAL),
        ];
        for (bytes, want) in cases {
            cl.send(&bytes);
            let r = cl.reply();
            assert_eq!(error_of(&r), want.0, "structured {structured}: {r:?}");
            if structured {
                assert!(matches!(r, Reply::Chunk { flags: 1, .. }), "{r:?}");
            }
        }
        // DF without structured replies is not a valid flag.
        if !structured {
            cl.send(&req(Cmd::READ, cmd_flags::DF, 14, 0, 512));
            assert_eq!(error_of(&cl.reply()), Errno::EINVAL.0);
            cl.send(&req(Cmd::BLOCK_STATUS, 0, 15, 0, 512));
            assert_eq!(error_of(&cl.reply()), Errno::EINVAL.0);
        }
        // A write past the end: its payload is read and dropped, then ENOSPC.
        let mut b = req(Cmd::WRITE, 0, 16, (1 << 20) - 512, 1024);
        b.extend(vec![1; 1024]);
        b.extend(req(Cmd::FLUSH, 0, 17, 0, 0));
        assert_eq!(cl.send(&b), b.len());
        assert_eq!(error_of(&cl.reply()), Errno::ENOSPC.0);
        let c = cl.command();
        assert_eq!((c.cookie, c.op), (Cookie(17), Op::Flush), "still in step");
        assert!(cl.event().is_none(), "no event for refused requests");
    }
}

#[test]
fn a_read_only_export_refuses_writes_with_eperm() {
    let mut cl = Client::go("ro", false);
    let mut b = req(Cmd::WRITE, 0, 1, 0, 512);
    b.extend(vec![9; 512]);
    b.extend(req(Cmd::TRIM, 0, 2, 0, 512));
    b.extend(req(Cmd::WRITE_ZEROES, 0, 3, 0, 512));
    b.extend(req(Cmd::WRITE, 0, 4, 1 << 30, 512));
    b.extend(vec![9; 512]);
    b.extend(req(Cmd::READ, 0, 5, 0, 512));
    cl.send(&b);
    for cookie in 1..=4 {
        assert_eq!(
            cl.reply(),
            Reply::Simple {
                error: Errno::EPERM.0,
                cookie
            }
        );
    }
    assert_eq!(cl.command().op, Op::Read { df: false });
}

#[test]
fn zero_length_requests_are_answered_at_once() {
    for structured in [false, true] {
        let mut cl = Client::go("vol", structured);
        let mut b = Vec::new();
        b.extend(req(Cmd::READ, 0, 1, 0, 0));
        b.extend(req(Cmd::WRITE, 0, 2, 0, 0));
        b.extend(req(Cmd::TRIM, 0, 3, 0, 0));
        b.extend(req(Cmd::WRITE_ZEROES, 0, 4, 0, 0));
        b.extend(req(Cmd::CACHE, 0, 5, 0, 0));
        cl.send(&b);
        let first = cl.reply();
        if structured {
            assert_eq!(
                first,
                Reply::Chunk {
                    flags: 1,
                    kind: Chunk::NONE.0,
                    cookie: 1,
                    payload: Vec::new()
                }
            );
        } else {
            assert_eq!(
                first,
                Reply::Simple {
                    error: 0,
                    cookie: 1
                }
            );
        }
        for cookie in 2..=5 {
            assert_eq!(cl.reply(), Reply::Simple { error: 0, cookie });
        }
        assert!(cl.event().is_none());
    }
}

#[test]
fn oversized_requests_get_an_error_then_the_connection_ends() {
    for cmd in [Cmd::READ, Cmd::WRITE] {
        let mut cl = Client::go("vol", true);
        cl.send(&req(cmd, 0, 42, 0, (32 << 20) + 512));
        let r = cl.reply();
        assert_eq!(error_of(&r), Errno::EINVAL.0);
        assert!(matches!(r, Reply::Chunk { cookie: 42, .. }));
        assert_eq!(cl.event(), Some(Event::Close));
        assert!(cl.c.is_closed());
    }
    // Trims and write-zeroes carry no payload: any length is fine.
    let mut cl = Client::go("vol", false);
    cl.cat[0].size = 1 << 40;
    let mut cl2 = Client::new();
    cl2.cat[0].size = 1 << 40;
    cl2.option(Opt::GO, &info_data("vol", &[]));
    cl2.event();
    cl2.send(&req(Cmd::WRITE_ZEROES, 0, 1, 0, u32::MAX - 511));
    assert!(matches!(cl2.command().op, Op::WriteZeroes { .. }));
    drop(cl);
}

#[test]
fn a_bad_magic_ends_the_connection() {
    let mut cl = Client::go("vol", false);
    let mut b = req(Cmd::READ, 0, 1, 0, 512);
    b[0] = 0x21; // the extended-header magic, never negotiated
    b.extend(req(Cmd::READ, 0, 2, 0, 512));
    assert_eq!(cl.send(&b), b.len());
    assert_eq!(cl.event(), Some(Event::Close));
    assert!(cl.event().is_none());
    assert!(cl.got.is_empty());
}

#[test]
fn pipelined_commands_complete_out_of_order() {
    let mut cl = Client::go("vol", false);
    let mut b = Vec::new();
    for i in 0..32u64 {
        b.extend(req(Cmd::READ, 0, 100 + i, i * 512, 512));
    }
    cl.send(&b);
    let cmds: Vec<Command> = (0..32).map(|_| cl.command()).collect();
    assert_eq!(cl.c.outstanding(), 32);
    // Answer in reverse; each reply is whole and carries its cookie.
    for c in cmds.iter().rev() {
        let data = vec![c.cookie.0 as u8; 512];
        cl.c.reply_read(c.cookie, c.offset, &[&data[..256], &data[256..]], true);
    }
    for i in (0..32u64).rev() {
        let (err, cookie, data) = cl.simple_read(512);
        assert_eq!((err, cookie), (0, 100 + i));
        assert!(data.iter().all(|&x| x == (100 + i) as u8));
    }
    assert_eq!(cl.c.outstanding(), 0);
}

#[test]
fn structured_reads_send_data_chunks_and_errors() {
    let mut cl = Client::go("vol", true);
    cl.send(&req(Cmd::READ, 0, 1, 4096, 8192));
    let c = cl.command();
    // Two chunks, the second last; then a failing read.
    cl.c.reply_read(c.cookie, 8192, &[&[2u8; 4096]], false);
    assert_eq!(cl.c.outstanding(), 1, "not done yet");
    cl.c.reply_read(c.cookie, 4096, &[&[1u8; 4096]], true);
    for (want_flags, at, fill) in [(0u16, 8192u64, 2u8), (1, 4096, 1)] {
        match cl.reply() {
            Reply::Chunk {
                flags,
                kind,
                cookie,
                payload,
            } => {
                assert_eq!(
                    (flags, Chunk(kind), cookie),
                    (want_flags, Chunk::OFFSET_DATA, 1)
                );
                assert_eq!(be64(&payload), at);
                assert!(payload[8..].iter().all(|&x| x == fill) && payload.len() == 4104);
            }
            other => panic!("{other:?}"),
        }
    }
    cl.send(&req(Cmd::READ, 0, 2, 0, 512));
    let c = cl.command();
    cl.c.reply_error(c.cookie, Errno::EIO, "media error", Some(0));
    match cl.reply() {
        Reply::Chunk {
            flags,
            kind,
            payload,
            ..
        } => {
            assert_eq!((flags, Chunk(kind)), (1, Chunk::ERROR_OFFSET));
            assert_eq!(be32(&payload), Errno::EIO.0);
            let n = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
            assert_eq!(&payload[6..6 + n], b"media error");
            assert_eq!(be64(&payload[6 + n..]), 0);
        }
        other => panic!("{other:?}"),
    }
    // Success of other commands is a simple reply; errors are chunks with a message.
    cl.send(&req(Cmd::FLUSH, 0, 3, 12345, 678));
    let c = cl.command();
    assert_eq!(
        (c.offset, c.length),
        (0, 0),
        "a flush's reserved fields are not passed on"
    );
    cl.c.reply_ok(c.cookie);
    assert_eq!(
        cl.reply(),
        Reply::Simple {
            error: 0,
            cookie: 3
        }
    );
    cl.send(&req(Cmd::FLUSH, 0, 4, 0, 0));
    let c = cl.command();
    cl.c.reply_error(c.cookie, Errno::ENOSPC, "full", None);
    assert!(matches!(cl.reply(), Reply::Chunk { kind, .. } if Chunk(kind) == Chunk::ERROR));
}

#[test]
fn simple_read_errors_carry_no_data() {
    let mut cl = Client::go("vol", false);
    cl.send(&req(Cmd::READ, 0, 5, 0, 512));
    let c = cl.command();
    cl.c.reply_error(c.cookie, Errno::EIO, "bad", Some(0));
    assert_eq!(
        cl.reply(),
        Reply::Simple {
            error: Errno::EIO.0,
            cookie: 5
        }
    );
    assert!(cl.got.is_empty());
}

#[test]
fn disconnect_waits_for_commands_in_flight() {
    let mut cl = Client::go("vol", false);
    let mut b = req(Cmd::FLUSH, 0, 1, 0, 0);
    b.extend(req(Cmd::DISC, 0, 2, 0, 0));
    b.extend(req(Cmd::READ, 0, 3, 0, 512)); // after DISC: ignored
    assert_eq!(cl.send(&b), b.len());
    let c = cl.command();
    assert!(cl.event().is_none(), "nothing after DISC, no close yet");
    cl.c.reply_ok(c.cookie);
    assert_eq!(cl.event(), Some(Event::Close));
    assert_eq!(
        cl.reply(),
        Reply::Simple {
            error: 0,
            cookie: 1
        }
    );
    // With nothing in flight, DISC closes at once.
    let mut cl = Client::go("vol", false);
    cl.send(&req(Cmd::DISC, 0, 1, 0, 0));
    assert_eq!(cl.event(), Some(Event::Close));
}

#[test]
fn too_many_commands_in_flight_pause_receiving() {
    let cfg = ConnConfig {
        max_in_flight: 4,
        ..ConnConfig::default()
    };
    let mut cl = Client::with(cfg, 3);
    cl.option(Opt::GO, &info_data("vol", &[]));
    cl.event();
    let mut b = Vec::new();
    for i in 0..6u64 {
        b.extend(req(Cmd::READ, 0, i, 0, 512));
    }
    let n = cl.send(&b);
    assert_eq!(n, 4 * REQUEST_LEN, "stops after four");
    assert!(cl.c.throttled());
    let cmds: Vec<Command> = (0..4).map(|_| cl.command()).collect();
    cl.c.reply_read(cmds[0].cookie, 0, &[&[0u8; 512]], true);
    assert!(!cl.c.throttled());
    let n2 = cl.send(&b[n..]);
    assert_eq!(n2, REQUEST_LEN, "one more fits");
    // Held write payload pauses too.
    let cfg = ConnConfig {
        max_held: 1024,
        ..ConnConfig::default()
    };
    let mut cl = Client::with(cfg, 3);
    cl.option(Opt::GO, &info_data("vol", &[]));
    cl.event();
    let mut b = Vec::new();
    for i in 0..3u64 {
        b.extend(req(Cmd::WRITE, 0, i, 0, 1024));
        b.extend(vec![i as u8; 1024]);
    }
    let n = cl.send(&b);
    assert_eq!(n, REQUEST_LEN + 1024);
    let Op::Write { data, .. } = cl.command().op else {
        panic!("a write")
    };
    cl.c.release_write(data);
    assert_eq!(cl.send(&b[n..]), REQUEST_LEN + 1024);
}

#[test]
fn oversized_options_are_skipped_and_answered_too_big() {
    let cfg = ConnConfig {
        max_option: 64,
        ..ConnConfig::default()
    };
    let mut cl = Client::with(cfg, 3);
    let big = vec![7u8; 1000];
    // In pieces: skipped as it arrives.
    let b = opt(Opt::LIST_META_CONTEXT, &big);
    for chunk in b.chunks(100) {
        assert_eq!(cl.send(chunk), chunk.len());
    }
    let r = cl.opt_reply();
    assert_eq!(Rep(r.1), Rep::ERR_TOO_BIG);
    let r = cl.option(Opt::LIST, &[]);
    assert_eq!(Rep(r.last().expect("final").1), Rep::ACK);
    let mut b = Vec::new();
    OptionHeader {
        option: Opt::EXPORT_NAME,
        length: 100_000,
    }
    .encode(&mut b);
    cl.send(&b);
    assert_eq!(cl.event(), Some(Event::Close));
}

#[test]
fn a_whole_session_in_random_pieces_gives_the_same_events() {
    let mut bytes = 3u32.to_be_bytes().to_vec();
    bytes.extend(opt(Opt::STRUCTURED_REPLY, &[]));
    bytes.extend(opt(Opt::LIST, &[]));
    bytes.extend(opt(
        Opt::SET_META_CONTEXT,
        &meta_data("vol", &["base:allocation"]),
    ));
    bytes.extend(opt(Opt::GO, &info_data("vol", &[Info::NAME])));
    for i in 0..8u64 {
        bytes.extend(req(Cmd::WRITE, 0, i, i * 4096, 4096));
        bytes.extend(vec![i as u8; 4096]);
    }
    bytes.extend(req(Cmd::DISC, 0, 99, 0, 0));
    for step in [1usize, 3, 17, 100, 5000, 1 << 20] {
        let mut c = Connection::new(ConnConfig::default());
        let cat = catalog();
        let mut buf = Vec::new();
        let mut writes = 0;
        for chunk in bytes.chunks(step) {
            buf.extend_from_slice(chunk);
            let used = c.receive(&buf, &cat);
            buf.drain(..used);
            while let Some(ev) = c.next_event() {
                if let Event::Command(cmd) = ev {
                    let Op::Write { data, .. } = cmd.op else {
                        panic!("only writes")
                    };
                    assert_eq!(data, vec![cmd.cookie.0 as u8; 4096]);
                    c.release_write(data);
                    c.reply_ok(cmd.cookie);
                    writes += 1;
                }
            }
        }
        assert_eq!(writes, 8, "step {step}");
        assert!(c.is_closed(), "DISC after the last reply closes");
    }
}

proptest::proptest! {
    /// Any corruption of a valid session ends in events and replies or a close: never a
    /// panic, nothing after the close, and never more consumed than given.
    #[test]
    fn corrupted_sessions_never_panic(
        flips in proptest::collection::vec((0usize..6000, proptest::prelude::any::<u8>()), 1..12),
        step in 1usize..700,
        structured in proptest::prelude::any::<bool>(),
    ) {
        let mut bytes = 3u32.to_be_bytes().to_vec();
        if structured {
            bytes.extend(opt(Opt::STRUCTURED_REPLY, &[]));
            bytes.extend(opt(Opt::SET_META_CONTEXT, &meta_data("vol", &["base:allocation"])));
        }
        bytes.extend(opt(Opt::INFO, &info_data("vol", &[Info::NAME])));
        bytes.extend(opt(Opt::GO, &info_data("vol", &[Info::BLOCK_SIZE])));
        bytes.extend(req(Cmd::WRITE, cmd_flags::FUA, 1, 0, 4096));
        bytes.extend(vec![5; 4096]);
        bytes.extend(req(Cmd::READ, cmd_flags::DF, 2, 0, 4096));
        bytes.extend(req(Cmd::BLOCK_STATUS, 0, 3, 0, 4096));
        bytes.extend(req(Cmd::TRIM, 0, 4, 4096, 4096));
        for (at, v) in flips {
            let n = bytes.len();
            bytes[at % n] ^= v | 1;
        }
        let mut c = Connection::new(ConnConfig::default());
        let cat = catalog();
        let mut buf = Vec::new();
        let mut closed = false;
        for chunk in bytes.chunks(step) {
            buf.extend_from_slice(chunk);
            let used = c.receive(&buf, &cat);
            proptest::prop_assert!(used <= buf.len());
            buf.drain(..used);
            while let Some(ev) = c.next_event() {
                proptest::prop_assert!(!closed, "event after close");
                match ev {
                    Event::Close => closed = true,
                    Event::Attach(_) => {}
                    Event::Command(cmd) => match cmd.op {
                        Op::Read { .. } => {
                            let d = vec![0u8; cmd.length as usize];
                            c.reply_read(cmd.cookie, cmd.offset, &[&d], true);
                        }
                        Op::Write { data, .. } => {
                            c.release_write(data);
                            c.reply_ok(cmd.cookie);
                        }
                        Op::BlockStatus { .. } => c.reply_block_status(
                            cmd.cookie,
                            &[Extent { length: cmd.length, flags: 0 }],
                        ),
                        _ => c.reply_ok(cmd.cookie),
                    },
                }
            }
            let mut out = Vec::new();
            c.transmit(&mut out);
        }
    }
}
