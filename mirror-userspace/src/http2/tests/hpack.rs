//! HPACK through [`HpackDecoder`]: the RFC 7541 Appendix C examples (with and without Huffman,
//! the dynamic table filling and evicting), and the limits.

use super::super::hpack::{AnnouncedSettings, DEFAULT_TABLE_SIZE};
use super::super::{HeaderList, HpackDecoder, HpackError, Settings};
use super::{Encoder, Repr, fields, hex};

const ALLOWED: u32 = DEFAULT_TABLE_SIZE;

fn decoder() -> HpackDecoder {
    HpackDecoder::new(65_536, 65_536)
}

fn decode(decoder: &mut HpackDecoder, block: &str) -> Result<HeaderList, HpackError> {
    decoder.decode(&hex(block), ALLOWED)
}

/// The decoder's dynamic table, read back through indexed fields 62.. (newest first).
fn table(decoder: &mut HpackDecoder) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    for index in 62..=126u8 {
        let Ok(list) = decoder.decode(&[0x80 | index], ALLOWED) else {
            break;
        };
        let (name, value) = list.iter().next().unwrap();
        entries.push((
            String::from_utf8(name.to_vec()).unwrap(),
            String::from_utf8(value.to_vec()).unwrap(),
        ));
    }
    entries
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn c2_single_representations() {
    let mut decoder = decoder();
    let list = decode(
        &mut decoder,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    );
    assert_eq!(list, Ok(fields(&[("custom-key", "custom-header")])));
    assert_eq!(
        table(&mut decoder),
        pairs(&[("custom-key", "custom-header")])
    );

    let mut decoder = self::decoder();
    let list = decode(&mut decoder, "040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(list, Ok(fields(&[(":path", "/sample/path")])));
    assert_eq!(table(&mut decoder), pairs(&[]));

    let list = decode(&mut decoder, "1008 7061 7373 776f 7264 0673 6563 7265 74");
    assert_eq!(list, Ok(fields(&[("password", "secret")])));
    assert_eq!(table(&mut decoder), pairs(&[]));

    assert_eq!(
        decode(&mut decoder, "82"),
        Ok(fields(&[(":method", "GET")]))
    );
}

const C3_HEADERS: [&[(&str, &str)]; 3] = [
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
];

const C3_TABLES: [&[(&str, &str)]; 3] = [
    &[(":authority", "www.example.com")],
    &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ],
    &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ],
];

fn requests(blocks: [&str; 3]) {
    let mut decoder = decoder();
    for ((block, headers), table) in blocks.iter().zip(C3_HEADERS).zip(C3_TABLES) {
        assert_eq!(decode(&mut decoder, block), Ok(fields(headers)));
        assert_eq!(self::table(&mut decoder), pairs(table));
    }
}

#[test]
fn c3_requests_without_huffman() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_with_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

const DATE_21: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE_22: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

/// C.5 and C.6 use a 256-byte table: the first block is prefixed with a size update to 256.
fn responses(blocks: [&str; 3]) {
    let headers: [&[(&str, &str)]; 3] = [
        &[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", DATE_21),
            ("location", LOCATION),
        ],
        &[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", DATE_21),
            ("location", LOCATION),
        ],
        &[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", DATE_22),
            ("location", LOCATION),
            ("content-encoding", "gzip"),
            ("set-cookie", COOKIE),
        ],
    ];
    let tables: [&[(&str, &str)]; 3] = [
        &[
            ("location", LOCATION),
            ("date", DATE_21),
            ("cache-control", "private"),
            (":status", "302"),
        ],
        // ":status: 302" evicted.
        &[
            (":status", "307"),
            ("location", LOCATION),
            ("date", DATE_21),
            ("cache-control", "private"),
        ],
        // Four evicted.
        &[
            ("set-cookie", COOKIE),
            ("content-encoding", "gzip"),
            ("date", DATE_22),
        ],
    ];
    let mut decoder = decoder();
    for (index, ((block, headers), table)) in blocks.iter().zip(headers).zip(tables).enumerate() {
        let block = if index == 0 {
            format!("3fe101 {block}")
        } else {
            block.to_string()
        };
        assert_eq!(
            decode(&mut decoder, &block),
            Ok(fields(headers)),
            "C.x.{index}"
        );
        assert_eq!(self::table(&mut decoder), pairs(table), "C.x.{index}");
    }
}

#[test]
fn c5_responses_without_huffman_evicting() {
    responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ]);
}

#[test]
fn c6_responses_with_huffman_evicting() {
    responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn test_encoder_round_trips_through_the_decoder() {
    let mut encoder = Encoder::default();
    let mut decoder = decoder();
    let list = [
        (":method", "POST"),
        ("custom-key", "custom-value"),
        ("custom-key", "custom-value"),
        ("x-never", "secret"),
        ("date", DATE_21),
        ("x-without", "no-cache"),
    ];
    for round in 0..3 {
        let mut block = Vec::new();
        if round == 2 {
            // Flush the table, then allow it again.
            encoder.size_update(&mut block, 0);
            encoder.size_update(&mut block, 100);
        }
        for (index, (name, value)) in list.iter().enumerate() {
            let repr = [Repr::Incremental, Repr::Never, Repr::Without][index % 3];
            encoder.field(
                &mut block,
                name.as_bytes(),
                value.as_bytes(),
                repr,
                round > 0,
            );
        }
        assert_eq!(
            decoder.decode(&block, ALLOWED),
            Ok(fields(&list)),
            "round {round}"
        );
    }
}

#[test]
fn size_updates_are_bounded_by_the_receiver_and_by_the_limit() {
    let mut encoder = Encoder::default();
    let mut block = Vec::new();
    encoder.size_update(&mut block, 8192);
    block.push(0x82);
    assert_eq!(
        decoder().decode(&block, 4096),
        Err(HpackError::TableSizeExceeded)
    );
    assert_eq!(
        decoder().decode(&block, 8192),
        Ok(fields(&[(":method", "GET")]))
    );
    assert_eq!(
        HpackDecoder::new(4096, 65_536).decode(&block, 65_536),
        Err(HpackError::TableTooLarge)
    );
    // Smaller than the initial size is fine.
    assert!(decoder().decode(&[0x20, 0x82], 0).is_ok());
}

#[test]
fn malformed_blocks_and_oversized_lists_are_errors() {
    for block in ["ff", "be", "4a", "410f 7777", "8dff ffff", "20"] {
        assert_eq!(
            decoder().decode(&hex(block), ALLOWED),
            Err(HpackError::Malformed),
            "{block}"
        );
    }
    let mut block = Vec::new();
    let mut encoder = Encoder::default();
    for index in 0..10 {
        let name = format!("x-field-{index}");
        encoder.field(
            &mut block,
            name.as_bytes(),
            &[b'v'; 50],
            Repr::Without,
            false,
        );
    }
    // Ten fields of 9 + 50 + 32 bytes.
    assert!(HpackDecoder::new(4096, 910).decode(&block, ALLOWED).is_ok());
    assert_eq!(
        HpackDecoder::new(4096, 909).decode(&block, ALLOWED),
        Err(HpackError::ListTooLarge)
    );
}

#[test]
fn header_list_keeps_order_and_repeats() {
    let list = fields(&[("a", "1"), ("b", ""), ("a", "2")]);
    assert_eq!(list.len(), 3);
    assert_eq!(list.get(b"a"), Some(&b"1"[..]));
    assert_eq!(list.get(b"c"), None);
    let collected: Vec<_> = list.iter().collect();
    assert_eq!(
        collected,
        [(&b"a"[..], &b"1"[..]), (b"b", b""), (b"a", b"2")]
    );
    assert_eq!(list.size(), 5 + 3 * 32);
    assert_eq!(
        format!("{list:?}"),
        r#"[("a", "1"), ("b", ""), ("a", "2")]"#
    );
}

#[test]
fn announced_settings_bound_until_acknowledged() {
    let mut announced = AnnouncedSettings::default();
    assert_eq!(
        (announced.table_size(), announced.max_frame_size()),
        (4096, 16_384)
    );
    announced.announce(Settings {
        header_table_size: Some(100),
        max_frame_size: Some(1 << 20),
        ..Settings::default()
    });
    // Raising applies at once; lowering only once acknowledged.
    assert_eq!(
        (announced.table_size(), announced.max_frame_size()),
        (4096, 1 << 20)
    );
    announced.acknowledge();
    assert_eq!(
        (announced.table_size(), announced.max_frame_size()),
        (100, 1 << 20)
    );
    announced.announce(Settings {
        header_table_size: Some(65_536),
        ..Settings::default()
    });
    assert_eq!(announced.table_size(), 65_536);
    announced.acknowledge();
    announced.acknowledge();
    assert_eq!(announced.table_size(), 65_536);
    for size in 0..20 {
        announced.announce(Settings {
            header_table_size: Some(size),
            ..Settings::default()
        });
    }
    assert_eq!(announced.table_size(), 19, "bounded queue");
}
