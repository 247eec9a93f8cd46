//! The frame layer, frame type by frame type and flag by flag, fed whole and byte by byte.

use bytes::Bytes;

use super::super::frame::{PREFACE, Priority, flag, kind, setting};
use super::super::{Frame, FrameError, FrameReader, GapOutcome, Settings};
use super::{data, frame, goaway, headers, ping, rst, settings, settings_ack, window_update};

const LIMIT: usize = 1024;

fn read(reader: &mut FrameReader, bytes: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
    reader.push(Bytes::copy_from_slice(bytes));
    let mut frames = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(error) => return (frames, Some(error)),
        }
    }
}

/// Frames of `bytes` on a server reader (after its first SETTINGS), fed whole and byte by
/// byte; DATA pieces are merged per frame so both feeds compare.
fn frames(bytes: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
    let mut whole = FrameReader::server(LIMIT);
    let start = settings(&[]);
    read(&mut whole, &start);
    let (frames, error) = read(&mut whole, bytes);
    let mut split = FrameReader::server(LIMIT);
    read(&mut split, &start);
    let mut pieces = Vec::new();
    let mut split_error = None;
    for byte in bytes {
        let (more, error) = read(&mut split, std::slice::from_ref(byte));
        pieces.extend(more);
        split_error = split_error.or(error);
    }
    assert_eq!(merge(frames.clone()), merge(pieces), "byte by byte");
    assert_eq!(error, split_error);
    (merge(frames), error)
}

fn merge(frames: Vec<Frame>) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for frame in frames {
        if let (
            Some(Frame::Data {
                stream,
                data,
                end_of_frame: false,
                ..
            }),
            Frame::Data {
                stream: next,
                data: more,
                end_of_frame,
                end_stream,
            },
        ) = (out.last(), &frame)
            && stream == next
        {
            let joined = [&data[..], &more[..]].concat();
            *out.last_mut().unwrap() = Frame::Data {
                stream: *next,
                data: joined.into(),
                end_of_frame: *end_of_frame,
                end_stream: *end_stream,
            };
            continue;
        }
        out.push(frame);
    }
    out
}

fn data_frame(stream: u32, bytes: &[u8], end_stream: bool) -> Frame {
    Frame::Data {
        stream,
        data: Bytes::copy_from_slice(bytes),
        end_of_frame: true,
        end_stream,
    }
}

#[test]
fn client_preface_in_any_pieces_then_frames() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(settings(&[(setting::HEADER_TABLE_SIZE, 0)]));
    for cut in 0..bytes.len() {
        let mut reader = FrameReader::client(LIMIT);
        let (mut got, error) = read(&mut reader, &bytes[..cut]);
        let (more, more_error) = read(&mut reader, &bytes[cut..]);
        got.extend(more);
        assert_eq!(error.or(more_error), None);
        assert_eq!(
            got,
            [
                Frame::Preface,
                Frame::Settings {
                    ack: false,
                    settings: Settings {
                        header_table_size: Some(0),
                        ..Settings::default()
                    }
                }
            ],
            "cut at {cut}"
        );
    }
}

#[test]
fn missing_preface_or_first_settings_is_a_join() {
    let mut reader = FrameReader::client(LIMIT);
    assert_eq!(
        read(&mut reader, b"PRI * HTTP/2.0\r\n\r\nXX"),
        (vec![], Some(FrameError::NoPreface))
    );
    assert_eq!(
        reader.next_frame(),
        Err(FrameError::NoPreface),
        "stays failed"
    );
    assert_eq!(reader.buffered_bytes(), 0);
    let mut reader = FrameReader::server(LIMIT);
    assert_eq!(
        read(&mut reader, &ping(false)).1,
        Some(FrameError::NoPreface)
    );
    let mut reader = FrameReader::server(LIMIT);
    assert_eq!(
        read(&mut reader, &settings_ack()).1,
        Some(FrameError::NoPreface)
    );
}

#[test]
fn data_plain_padded_empty_and_end_stream() {
    let mut bytes = data(1, b"hello", false, None);
    bytes.extend(data(3, b"padded", true, Some(7)));
    bytes.extend(data(1, b"", true, None));
    bytes.extend(data(5, b"", false, Some(0)));
    assert_eq!(
        frames(&bytes),
        (
            vec![
                data_frame(1, b"hello", false),
                data_frame(3, b"padded", true),
                data_frame(1, b"", true),
                data_frame(5, b"", false),
            ],
            None
        )
    );
}

#[test]
fn data_is_handed_on_as_it_arrives() {
    let bytes = data(1, b"abcdef", true, Some(3));
    let mut reader = FrameReader::server(LIMIT);
    read(&mut reader, &settings(&[]));
    let mut pieces = Vec::new();
    for byte in &bytes {
        pieces.extend(read(&mut reader, std::slice::from_ref(byte)).0);
        assert!(reader.buffered_bytes() == 0, "nothing held");
    }
    // Six one-byte pieces, then the end of the frame after its padding.
    assert_eq!(pieces.len(), 7);
    assert_eq!(pieces[6], data_frame(1, b"", true));
    assert!(pieces[..6]
        .iter()
        .all(|piece| matches!(piece, Frame::Data { end_of_frame: false, end_stream: false, data, .. } if data.len() == 1)));
}

#[test]
fn data_padding_errors() {
    let mut bad = frame(kind::DATA, flag::PADDED, 1, &[5, b'a', 0, 0]);
    assert_eq!(frames(&bad), (vec![], Some(FrameError::BadPadding)));
    bad = frame(kind::DATA, flag::PADDED, 1, &[]);
    assert_eq!(frames(&bad), (vec![], Some(FrameError::BadPadding)));
    // Pad length equal to the rest of the payload is fine.
    let ok = frame(kind::DATA, flag::PADDED, 1, &[2, 0, 0]);
    assert_eq!(frames(&ok), (vec![data_frame(1, b"", false)], None));
}

#[test]
fn headers_flags_and_continuations() {
    let block = b"0123456789";
    let mut bytes = headers(1, block, true, None, false, &[]);
    bytes.extend(headers(3, block, false, Some(4), true, &[]));
    bytes.extend(headers(5, block, false, Some(1), true, &[0, 3, 3, 9]));
    let expect = |stream, end_stream, priority| Frame::Headers {
        stream,
        end_stream,
        priority,
        block: Bytes::from_static(block),
    };
    let priority = Some(Priority {
        dependency: 1,
        exclusive: true,
        weight: 15,
    });
    assert_eq!(
        frames(&bytes),
        (
            vec![
                expect(1, true, None),
                expect(3, false, priority),
                expect(5, false, priority),
            ],
            None
        )
    );
}

#[test]
fn continuation_errors() {
    let open = headers(1, b"abcd", false, None, false, &[2]);
    let unfinished = &open[..open.len() - 11];
    let mut other_stream = unfinished.to_vec();
    other_stream.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 3, b"cd"));
    assert_eq!(frames(&other_stream).1, Some(FrameError::BadContinuation));
    let mut interleaved = unfinished.to_vec();
    interleaved.extend(ping(false));
    assert_eq!(frames(&interleaved).1, Some(FrameError::BadContinuation));
    let stray = frame(kind::CONTINUATION, flag::END_HEADERS, 1, b"ab");
    assert_eq!(frames(&stray).1, Some(FrameError::BadContinuation));
    let too_short = frame(kind::HEADERS, flag::PRIORITY | flag::END_HEADERS, 1, b"abc");
    assert_eq!(frames(&too_short).1, Some(FrameError::BadLength));
    let bad_pad = frame(kind::HEADERS, flag::PADDED | flag::END_HEADERS, 1, &[9, 1]);
    assert_eq!(frames(&bad_pad).1, Some(FrameError::BadPadding));
}

#[test]
fn header_blocks_are_bounded_across_continuations() {
    let fits = headers(1, &[b'x'; LIMIT], false, None, false, &[500]);
    assert_eq!(frames(&fits).0.len(), 1);
    let over = headers(1, &[b'x'; LIMIT + 1], false, None, false, &[]);
    assert_eq!(frames(&over).1, Some(FrameError::HeaderBlockTooLarge));
    let over = headers(1, &[b'x'; LIMIT + 1], false, None, false, &[600]);
    assert_eq!(
        frames(&over),
        (vec![], Some(FrameError::HeaderBlockTooLarge))
    );
}

#[test]
fn push_promise_with_padding() {
    let mut payload = vec![2, 0, 0, 0, 2];
    payload.extend_from_slice(b"blk");
    payload.extend_from_slice(&[0, 0]);
    let bytes = frame(
        kind::PUSH_PROMISE,
        flag::PADDED | flag::END_HEADERS,
        1,
        &payload,
    );
    assert_eq!(
        frames(&bytes),
        (
            vec![Frame::PushPromise {
                stream: 1,
                promised: 2,
                block: Bytes::from_static(b"blk"),
            }],
            None
        )
    );
}

#[test]
fn settings_values_ack_and_errors() {
    let bytes = settings(&[
        (setting::HEADER_TABLE_SIZE, 100),
        (setting::ENABLE_PUSH, 0),
        (setting::MAX_CONCURRENT_STREAMS, 10),
        (setting::INITIAL_WINDOW_SIZE, 65_535),
        (setting::MAX_FRAME_SIZE, 1 << 20),
        (setting::MAX_HEADER_LIST_SIZE, 8192),
        (0x99, 1),
        (setting::HEADER_TABLE_SIZE, 200),
    ]);
    let expected = Settings {
        header_table_size: Some(200),
        enable_push: Some(0),
        max_concurrent_streams: Some(10),
        initial_window_size: Some(65_535),
        max_frame_size: Some(1 << 20),
        max_header_list_size: Some(8192),
    };
    let mut both = bytes.clone();
    both.extend(settings_ack());
    assert_eq!(
        frames(&both),
        (
            vec![
                Frame::Settings {
                    ack: false,
                    settings: expected
                },
                Frame::Settings {
                    ack: true,
                    settings: Settings::default()
                }
            ],
            None
        )
    );
    let ack_with_payload = frame(kind::SETTINGS, flag::ACK, 0, &[0; 6]);
    assert_eq!(frames(&ack_with_payload).1, Some(FrameError::BadLength));
    assert_eq!(
        frames(&frame(kind::SETTINGS, 0, 0, &[0; 5])).1,
        Some(FrameError::BadLength)
    );
    assert_eq!(
        frames(&frame(kind::SETTINGS, 0, 1, &[])).1,
        Some(FrameError::BadStreamId)
    );
    for (id, value) in [
        (setting::MAX_FRAME_SIZE, 16_383),
        (setting::MAX_FRAME_SIZE, 1 << 24),
        (setting::ENABLE_PUSH, 2),
        (setting::INITIAL_WINDOW_SIZE, 1 << 31),
    ] {
        assert_eq!(
            frames(&settings(&[(id, value)])).1,
            Some(FrameError::BadSetting)
        );
    }
}

#[test]
fn frame_size_is_bounded_by_the_receivers_setting() {
    let big = data(1, &[b'x'; 16_385], false, None);
    assert_eq!(frames(&big), (vec![], Some(FrameError::FrameTooLarge)));
    let mut reader = FrameReader::server(LIMIT);
    read(&mut reader, &settings(&[]));
    reader.set_max_frame_size(1 << 20);
    let (got, error) = read(&mut reader, &big);
    assert_eq!((got.len(), error), (1, None));
}

#[test]
fn control_frames() {
    let mut bytes = window_update(0, 1000);
    bytes.extend(window_update(7, 0x8000_0001));
    bytes.extend(rst(3, 8));
    bytes.extend(goaway(5, 2));
    bytes.extend(ping(true));
    bytes.extend(frame(kind::PRIORITY, 0, 9, &[0, 0, 0, 7, 200]));
    bytes.extend(frame(0x42, 0xff, 11, b"whatever"));
    assert_eq!(
        frames(&bytes),
        (
            vec![
                Frame::WindowUpdate {
                    stream: 0,
                    increment: 1000
                },
                Frame::WindowUpdate {
                    stream: 7,
                    increment: 1
                },
                Frame::RstStream {
                    stream: 3,
                    error_code: 8
                },
                Frame::GoAway {
                    last_stream_id: 5,
                    error_code: 2
                },
                Frame::Ping {
                    ack: true,
                    data: *b"12345678"
                },
                Frame::Priority {
                    stream: 9,
                    priority: Priority {
                        dependency: 7,
                        exclusive: false,
                        weight: 200
                    }
                },
                Frame::Unknown {
                    kind: 0x42,
                    stream: 11,
                    len: 8
                },
            ],
            None
        )
    );
}

#[test]
fn control_frame_shapes_are_checked() {
    let cases = [
        (frame(kind::PING, 0, 0, b"1234567"), FrameError::BadLength),
        (
            frame(kind::PING, 0, 1, b"12345678"),
            FrameError::BadStreamId,
        ),
        (frame(kind::RST_STREAM, 0, 1, b"123"), FrameError::BadLength),
        (
            frame(kind::RST_STREAM, 0, 0, b"1234"),
            FrameError::BadStreamId,
        ),
        (
            frame(kind::WINDOW_UPDATE, 0, 1, b"12345"),
            FrameError::BadLength,
        ),
        (frame(kind::PRIORITY, 0, 1, b"1234"), FrameError::BadLength),
        (frame(kind::GOAWAY, 0, 0, b"1234567"), FrameError::BadLength),
        (
            frame(kind::GOAWAY, 0, 3, b"12345678"),
            FrameError::BadStreamId,
        ),
        (frame(kind::DATA, 0, 0, b""), FrameError::BadStreamId),
        (
            frame(kind::HEADERS, flag::END_HEADERS, 0, b""),
            FrameError::BadStreamId,
        ),
    ];
    for (bytes, error) in cases {
        assert_eq!(frames(&bytes), (vec![], Some(error)), "{bytes:?}");
    }
}

#[test]
fn gaps_inside_data_lose_the_stream_and_framing_goes_on() {
    let mut reader = FrameReader::server(LIMIT);
    read(&mut reader, &settings(&[]));
    let first = data(1, b"0123456789", true, Some(2));
    let (got, _) = read(&mut reader, &first[..12]);
    assert_eq!(got.len(), 1, "two data bytes so far");
    assert_eq!(reader.gap(5), GapOutcome::StreamLost(1));
    let mut rest = first[17..].to_vec();
    rest.extend(data(3, b"next", false, None));
    assert_eq!(
        read(&mut reader, &rest),
        (
            vec![data_frame(1, b"", true), data_frame(3, b"next", false)],
            None
        )
    );
    // A gap over the padding length byte.
    let padded = data(5, b"abc", false, Some(3));
    read(&mut reader, &padded[..9]);
    assert_eq!(reader.gap(1), GapOutcome::StreamLost(5));
    assert_eq!(
        read(&mut reader, &padded[10..]),
        (vec![data_frame(5, b"", false)], None)
    );
}

#[test]
fn gaps_elsewhere() {
    let fresh = || {
        let mut reader = FrameReader::server(LIMIT);
        read(&mut reader, &settings(&[]));
        reader
    };
    // At a frame boundary: a header is lost.
    assert_eq!(fresh().gap(1), GapOutcome::Fatal);
    // Past the end of the DATA frame.
    let mut reader = fresh();
    read(&mut reader, &data(1, b"abcd", false, None)[..10]);
    assert_eq!(reader.gap(4), GapOutcome::Fatal);
    assert_eq!(reader.next_frame(), Err(FrameError::Gap));
    // In a frame header.
    let mut reader = fresh();
    read(&mut reader, &ping(false)[..4]);
    assert_eq!(reader.gap(2), GapOutcome::Fatal);
    // In a header block.
    let mut reader = fresh();
    read(
        &mut reader,
        &headers(1, b"abcd", false, None, false, &[])[..10],
    );
    assert_eq!(reader.gap(1), GapOutcome::Fatal);
    // In SETTINGS.
    let mut reader = fresh();
    read(&mut reader, &settings(&[(1, 1)])[..10]);
    assert_eq!(reader.gap(1), GapOutcome::Fatal);
    // In a PING, a GOAWAY or an unknown frame: nothing reported is lost.
    for bytes in [ping(false), goaway(1, 0), frame(0x42, 0, 0, b"xyz")] {
        let mut reader = fresh();
        read(&mut reader, &bytes[..10]);
        assert_eq!(reader.gap(2), GapOutcome::Harmless);
        let (got, error) = read(&mut reader, &bytes[12..]);
        assert_eq!((got.len(), error), (0, None));
        assert!(reader.at_boundary());
    }
    // In RST_STREAM: that stream.
    let mut reader = fresh();
    read(&mut reader, &rst(7, 0)[..10]);
    assert_eq!(reader.gap(3), GapOutcome::StreamLost(7));
    assert_eq!(read(&mut reader, &[]), (vec![], None));
    assert_eq!(fresh().gap(0), GapOutcome::Harmless);
}
