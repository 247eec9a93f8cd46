use std::io::Write as _;

use proptest::prelude::*;

use super::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        encoder.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

/// `printf '{"made_by":"zstd CLI",...}' | zstd -19` with the reference CLI (v1.5.4): a
/// compressed block with an XXH64 content checksum.
const REFERENCE_ZSTD: &str = "28b52ffd244de5010062c30c12903d06009d88d31bdf3710a9b18aec6e0e01fb804af9e0cbed7df64191308248e5753e1b1f7e9001ced6fc72dcd6736c5e07010094ba4001a69e815e";
const REFERENCE_TEXT: &[u8] =
    br#"{"made_by":"zstd CLI","items":[1,2,3],"text":"hello hello hello hello hello"}"#;

/// 1000 bytes through `zstd --long=27 --no-content-size`: a 128 MiB window.
const WIDE_WINDOW_ZSTD: &str = "28b52ffd04888d0000507b226b223a2276227d0a0100db5b15242f17aabb";

fn json_body() -> Vec<u8> {
    let mut body = b"{\"items\":[".to_vec();
    for index in 0..200 {
        write!(body, "{{\"id\":{index},\"name\":\"item {index}\"}},").unwrap();
    }
    body.extend_from_slice(b"{}]}");
    body
}

#[test]
fn each_coding_round_trips() {
    let body = json_body();
    let cases: [(&[u8], Vec<u8>); 6] = [
        (b"gzip", gzip(&body)),
        (b"X-Gzip", gzip(&body)),
        (b"deflate", zlib(&body)),
        (b"Deflate", raw_deflate(&body)),
        (b"br", brotli(&body)),
        (b"zstd", zstd(&body)),
    ];
    for (token, encoded) in cases {
        assert_ne!(encoded, body);
        let headers = [(&b"Content-Encoding"[..], token)];
        let decoded = decode_response_body(&headers, &encoded, DEFAULT_BODY_BUDGET)
            .unwrap_or_else(|error| panic!("{}: {error}", String::from_utf8_lossy(token)));
        assert_eq!(
            decoded.as_ref(),
            body.as_slice(),
            "{}",
            String::from_utf8_lossy(token)
        );
    }
}

#[test]
fn identity_is_borrowed() {
    let body = b"{\"a\":1}";
    for headers in [vec![], vec![(&b"content-encoding"[..], &b"identity"[..])]] {
        let decoded = decode_response_body(&headers, body, 100).unwrap();
        assert!(matches!(decoded, Cow::Borrowed(_)));
        assert_eq!(decoded.as_ref(), body);
    }
}

#[test]
fn reference_zstd_frames_decode() {
    let frame = hex(REFERENCE_ZSTD);
    assert_eq!(
        decode(&[Coding::Zstd], &frame, 1024).unwrap().as_ref(),
        REFERENCE_TEXT
    );
    // Two frames, a skippable frame between them: the outputs concatenate.
    let mut stream = frame.clone();
    stream.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
    stream.extend_from_slice(&frame);
    let expected = [REFERENCE_TEXT, REFERENCE_TEXT].concat();
    assert_eq!(
        decode(&[Coding::Zstd], &stream, 1024).unwrap().as_ref(),
        expected
    );
}

#[test]
fn zstd_checksum_mismatch_is_corrupt() {
    let mut frame = hex(REFERENCE_ZSTD);
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    assert!(matches!(
        decode(&[Coding::Zstd], &frame, 1024),
        Err(DecodeError::Corrupt {
            coding: Coding::Zstd,
            ..
        })
    ));
}

#[test]
fn zstd_window_above_8_mib_is_rejected() {
    let error = decode(&[Coding::Zstd], &hex(WIDE_WINDOW_ZSTD), 1 << 20).unwrap_err();
    let DecodeError::Corrupt {
        coding: Coding::Zstd,
        detail,
    } = error
    else {
        panic!("{error:?}");
    };
    assert!(detail.contains("window"), "{detail}");
}

#[test]
fn large_window_brotli_is_rejected() {
    let body = json_body();
    let params = brotli::enc::BrotliEncoderParams {
        large_window: true,
        lgwin: 26,
        ..brotli::enc::BrotliEncoderParams::default()
    };
    let mut encoded = Vec::new();
    {
        let mut encoder = brotli::CompressorWriter::with_params(&mut encoded, 4096, &params);
        encoder.write_all(&body).unwrap();
    }
    // The same stream is valid for a large-window decoder...
    let mut permissive = brotli_decompressor::Decompressor::new(&encoded[..], 4096);
    let mut decoded = Vec::new();
    Read::read_to_end(&mut permissive, &mut decoded).unwrap();
    assert_eq!(decoded, body);
    // ...and rejected here.
    assert!(matches!(
        decode(&[Coding::Brotli], &encoded, DEFAULT_BODY_BUDGET),
        Err(DecodeError::Corrupt {
            coding: Coding::Brotli,
            ..
        })
    ));
}

#[test]
fn chains_are_undone_right_to_left() {
    let body = json_body();
    // `Content-Encoding: gzip, br`: gzip first, then br.
    let encoded = brotli(&gzip(&body));
    let one_line = [(&b"content-encoding"[..], &b"gzip, br"[..])];
    let two_lines = [
        (&b"Content-Encoding"[..], &b"gzip"[..]),
        (&b"Content-Type"[..], &b"application/json"[..]),
        (&b"Content-Encoding"[..], &b" br "[..]),
    ];
    for headers in [&one_line[..], &two_lines[..]] {
        assert_eq!(
            decode_response_body(headers, &encoded, DEFAULT_BODY_BUDGET)
                .unwrap()
                .as_ref(),
            body.as_slice()
        );
    }
    // The wrong order fails rather than returning garbage.
    let reversed = [(&b"content-encoding"[..], &b"br, gzip"[..])];
    assert!(matches!(
        decode_response_body(&reversed, &encoded, DEFAULT_BODY_BUDGET),
        Err(DecodeError::Corrupt {
            coding: Coding::Gzip,
            ..
        })
    ));
}

#[test]
fn coding_lists_are_parsed() {
    assert_eq!(
        parse_codings([&b"identity, GZIP,,zstd"[..], b"br"]).unwrap(),
        [Coding::Gzip, Coding::Zstd, Coding::Brotli]
    );
    assert_eq!(
        parse_codings([&b"gzip, compress"[..]]),
        Err(DecodeError::Unsupported("compress".into()))
    );
    assert_eq!(
        parse_codings([&b"gzip, gzip, gzip, gzip, gzip"[..]]),
        Err(DecodeError::TooManyCodings)
    );
}

#[test]
fn budget_is_inclusive() {
    let body = json_body();
    let encoded = gzip(&body);
    assert!(decode(&[Coding::Gzip], &encoded, body.len()).is_ok());
    assert_eq!(
        decode(&[Coding::Gzip], &encoded, body.len() - 1),
        Err(DecodeError::TooLarge {
            budget: body.len() - 1
        })
    );
    assert_eq!(
        decode(&[], &body, body.len() - 1),
        Err(DecodeError::TooLarge {
            budget: body.len() - 1
        })
    );
}

#[test]
fn bombs_stop_at_the_budget() {
    let zeros = vec![0_u8; 16 << 20];
    let budget = 64 * 1024;
    let bombs = [
        (Coding::Gzip, gzip(&zeros)),
        (Coding::Deflate, zlib(&zeros)),
        (Coding::Brotli, brotli(&zeros)),
        (Coding::Zstd, zstd(&zeros)),
    ];
    for (coding, bomb) in bombs {
        assert!(bomb.len() < 100_000, "{coding}: {}", bomb.len());
        assert_eq!(
            decode(&[coding], &bomb, budget),
            Err(DecodeError::TooLarge { budget }),
            "{coding}"
        );
    }
    // A 10 MB body in 863 bytes from the reference zstd CLI (8 MiB window).
    let reference_bomb = hex(include_str!("zstd_bomb.hex").trim());
    assert_eq!(
        decode(&[Coding::Zstd], &reference_bomb, budget),
        Err(DecodeError::TooLarge { budget })
    );
    assert_eq!(
        decode(&[Coding::Zstd], &reference_bomb, 10_000_000)
            .unwrap()
            .len(),
        10_000_000
    );
}

#[test]
fn output_capacity_never_exceeds_the_budget() {
    let zeros = vec![0_u8; 4 << 20];
    let bomb = gzip(&zeros);
    for budget in [1, 1000, 16 * 1024, 100_000, 1 << 20] {
        let mut out = Vec::new();
        let result = drain_into(flate2::read::GzDecoder::new(&bomb[..]), &mut out, budget);
        assert!(matches!(result, Err(Drained::TooLarge)));
        assert!(out.capacity() <= budget, "{} > {budget}", out.capacity());
        // Just large enough: everything decodes and the capacity still holds.
        let mut out = Vec::new();
        let small = gzip(&zeros[..budget]);
        assert!(drain_into(flate2::read::GzDecoder::new(&small[..]), &mut out, budget).is_ok());
        assert_eq!(out.len(), budget);
        assert!(out.capacity() <= budget);
    }
}

#[test]
fn corrupt_and_truncated_bodies_are_errors() {
    let body = json_body();
    for (coding, encoded) in [
        (Coding::Gzip, gzip(&body)),
        (Coding::Deflate, zlib(&body)),
        (Coding::Brotli, brotli(&body)),
        (Coding::Zstd, zstd(&body)),
    ] {
        let truncated = &encoded[..encoded.len() / 2];
        assert!(
            matches!(decode(&[coding], truncated, DEFAULT_BODY_BUDGET), Err(DecodeError::Corrupt { coding: c, .. }) if c == coding),
            "{coding} truncated"
        );
    }
    assert!(matches!(
        decode(&[Coding::Gzip], b"not gzip at all", DEFAULT_BODY_BUDGET),
        Err(DecodeError::Corrupt { .. })
    ));
    assert!(matches!(
        decode(&[Coding::Zstd], b"", DEFAULT_BODY_BUDGET),
        Err(DecodeError::Corrupt { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_body_round_trips(body in proptest::collection::vec(any::<u8>(), 0..4096), coding in 0..4_usize) {
        let (coding, encoded) = match coding {
            0 => (Coding::Gzip, gzip(&body)),
            1 => (Coding::Deflate, raw_deflate(&body)),
            2 => (Coding::Brotli, brotli(&body)),
            _ => (Coding::Zstd, zstd(&body)),
        };
        let decoded = decode(&[coding], &encoded, body.len()).unwrap();
        prop_assert_eq!(decoded.as_ref(), body.as_slice());
    }
}
