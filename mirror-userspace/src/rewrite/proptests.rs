//! Property: only the edited header lines change; every other byte, and the body, is identical.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::config::{HostMode, ShadowUrl};

/// Names the rewriter below edits (lower case).
const EDITED: [&str; 4] = ["host", "x-forwarded-host", "x-env", "cookie"];

fn rewriter(mode: HostMode) -> Rewriter {
    Rewriter::new(
        &TargetConfig {
            host: mode,
            set_headers: vec![HeaderField::new("X-Env", "shadow").unwrap()],
            remove_headers: vec!["cookie".into()],
            ..TargetConfig::with_defaults("p".into(), 80, ShadowUrl::parse("http://s:81").unwrap())
        },
        &crate::config::ShadowUrl::parse("http://shadow.internal:9000").unwrap(),
    )
}

fn host_mode() -> impl Strategy<Value = HostMode> {
    prop_oneof![
        Just(HostMode::default()),
        Just(HostMode::Shadow),
        Just(HostMode::Keep),
        Just(HostMode::Literal("lit:1".into())),
    ]
}

fn field() -> impl Strategy<Value = (String, &'static str, String)> {
    let name = prop::sample::select(vec![
        "Host",
        "host",
        "X-Forwarded-Host",
        "Accept",
        "X-Env",
        "x-env",
        "Cookie",
        "COOKIE",
        "User-Agent",
        "X-Request-Id",
        "Content-Type",
    ]);
    let separator = prop::sample::select(vec![": ", ":", ":\t", ":  "]);
    (
        name.prop_map(String::from),
        separator,
        "[a-zA-Z0-9.:,\\[\\] -]{0,16}",
    )
}

/// The head's lines (line ending included) whose field name is not edited.
fn untouched_lines(head: &[u8]) -> Vec<&[u8]> {
    head.split_inclusive(|&byte| byte == b'\n')
        .filter(|line| {
            let name = line.split(|&byte| byte == b':').next().unwrap_or_default();
            !EDITED
                .iter()
                .any(|edited| name.eq_ignore_ascii_case(edited.as_bytes()))
        })
        .collect()
}

proptest! {
    #[test]
    fn only_edited_lines_change(
        mode in host_mode(),
        fields in prop::collection::vec(field(), 0..12),
        bare_lf in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let eol = if bare_lf { "\n" } else { "\r\n" };
        let mut head = format!("POST /p?q=1 HTTP/1.1{eol}");
        for (name, separator, value) in &fields {
            // A value ends without whitespace where the test needs to compare it exactly.
            head.push_str(&format!("{name}{separator}{}{eol}", value.trim_end()));
        }
        head.push_str(eol);
        let mut request = head.clone().into_bytes();
        request.extend_from_slice(&body);
        let request = Bytes::from(request);

        let rewritten = rewriter(mode).rewrite(&request, head.len()).unwrap();
        prop_assert_eq!(&rewritten.body[..], &body[..]);
        prop_assert_eq!(untouched_lines(&rewritten.head), untouched_lines(head.as_bytes()));

        let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut parsed_headers);
        let status = parsed.parse(&rewritten.head).unwrap();
        prop_assert_eq!(status, httparse::Status::Complete(rewritten.head.len()));
        prop_assert_eq!(parsed.path, Some("/p?q=1"));
        let named = |name: &str| {
            parsed.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect::<Vec<_>>()
        };
        prop_assert!(named("cookie").is_empty());
        prop_assert_eq!(named("x-env"), vec![&b"shadow"[..]]);
    }
}
