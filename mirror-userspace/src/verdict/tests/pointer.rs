use proptest::prelude::*;

use super::*;

#[test]
fn escaping_follows_rfc_6901() {
    assert_eq!(escape_token("a/b"), "a~1b");
    assert_eq!(escape_token("m~n"), "m~0n");
    assert_eq!(escape_token("~/"), "~0~1");
    assert_eq!(unescape_token("~01").unwrap(), "~1");
    assert_eq!(unescape_token("~10").unwrap(), "/0");
    assert!(matches!(
        unescape_token("a~2"),
        Err(PointerError::BadEscape(_))
    ));
    assert!(matches!(
        unescape_token("a~"),
        Err(PointerError::BadEscape(_))
    ));
    assert_eq!(parse_pointer("").unwrap(), Vec::<String>::new());
    assert_eq!(parse_pointer("/").unwrap(), [""]);
    assert_eq!(parse_pointer("/a~1b/m~0n/*").unwrap(), ["a/b", "m~n", "*"]);
    assert!(matches!(
        parse_pointer("a"),
        Err(PointerError::NoLeadingSlash(_))
    ));
    assert_eq!(format_pointer(["a/b", "m~n", "0"]), "/a~1b/m~0n/0");
}

#[test]
fn field_names_skip_indexes() {
    assert_eq!(
        field_name("/items/*/created_at").as_deref(),
        Some("created_at")
    );
    assert_eq!(field_name("/ids/*").as_deref(), Some("ids"));
    assert_eq!(field_name("/a~1b").as_deref(), Some("a/b"));
    assert_eq!(
        field_name("header:X-Request-Id").as_deref(),
        Some("X-Request-Id")
    );
    assert_eq!(field_name(""), None);
    assert_eq!(field_name("/*"), None);
}

#[test]
fn ignore_patterns_match_prefixes_and_wildcards() {
    let list = IgnoreList::new(&["/meta", "/items/*/etag", "/*/id", "header:X-Trace"]).unwrap();
    for ignored in [
        "/meta",
        "/meta/request_id",
        "/meta/*/x",
        "/items/*/etag",
        "/items/*/etag/deep",
        "/user/id",
        "/items/id",
        "header:x-trace",
    ] {
        assert!(list.matches(ignored), "{ignored}");
    }
    for kept in [
        "",
        "/metadata",
        "/items",
        "/items/*",
        "/items/*/name",
        "/id",
        "/user/name",
        "/a/b/id",
        "header:x-other",
    ] {
        assert!(!list.matches(kept), "{kept}");
    }
    assert!(list.ignores_header("X-TRACE"));
    assert!(IgnoreList::new(&["nope"]).is_err());
    assert!(IgnoreList::new(&[""]).unwrap().matches("/anything"));
    assert!(IgnoreList::new::<&str>(&[]).unwrap().is_empty());
}

fn token() -> impl Strategy<Value = String> {
    // Biased towards the two escaped characters.
    proptest::string::string_regex("[a-z~/*0-9]{0,8}").unwrap()
}

proptest! {
    #[test]
    fn escaping_round_trips(tokens in proptest::collection::vec(token(), 0..6)) {
        for token in &tokens {
            let escaped = escape_token(token);
            prop_assert!(!escaped.contains('/'));
            prop_assert_eq!(unescape_token(&escaped).unwrap(), token.as_str());
        }
        let pointer = format_pointer(tokens.iter().map(String::as_str));
        prop_assert_eq!(parse_pointer(&pointer).unwrap(), tokens);
    }
}
