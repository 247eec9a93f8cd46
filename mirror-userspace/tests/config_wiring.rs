//! The public API end to end, as the daemon wires it: config -> policy -> rewrite.

use bytes::Bytes;
use mirror::config::{Config, RunOverrides};
use mirror::policy::{Decision, Policy, RequestView, SkipReason, connection_id};
use mirror::rewrite::Rewriter;

/// A request parsed with httparse, standing in for the http module's `HttpRequest`.
struct Parsed {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    head_len: usize,
}

impl Parsed {
    fn new(bytes: &[u8]) -> Self {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut request = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head_len) = request.parse(bytes).unwrap() else {
            panic!("incomplete");
        };
        Self {
            method: request.method.unwrap().to_owned(),
            target: request.path.unwrap().to_owned(),
            headers: request
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            head_len,
        }
    }
}

impl RequestView for Parsed {
    fn method(&self) -> &str {
        &self.method
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }
}

const CONFIG: &str = r#"
[capture]
interfaces = ["eth0"]

[[target]]
name = "api"
port = 8080
shadow = "http://api-v2.staging:8080"
paths = { deny = ["^/admin"] }
host = "shadow"
set_headers = { "X-Mirrored-By" = "mirror" }
remove_headers = ["cookie"]
"#;

#[test]
fn a_captured_request_becomes_the_bytes_to_replay() {
    let file = Config::from_toml(CONFIG, "mirror.toml").unwrap();
    let config = Config::with_overrides(Some(file), &RunOverrides::default()).unwrap();
    let target = config.target_for_port(8080).unwrap();
    let mut policy = Policy::new(target);
    let rewriter = Rewriter::new(target, &target.shadows[0].url);
    let connection = connection_id(
        "198.18.0.2:40000".parse().unwrap(),
        "198.18.0.1:8080".parse().unwrap(),
    );

    let captured = Bytes::from_static(
        b"GET /search?q=1 HTTP/1.1\r\nHost: api:8080\r\nCookie: s=1\r\nAccept: */*\r\n\r\n",
    );
    let request = Parsed::new(&captured);
    assert_eq!(
        policy.decide(&request, connection, 7, 1_000),
        Decision::Mirror
    );
    let replay = rewriter.rewrite(&captured, request.head_len).unwrap();
    assert_eq!(
        replay.to_bytes(),
        &b"GET /search?q=1 HTTP/1.1\r\nHost: api-v2.staging:8080\r\nAccept: */*\r\nX-Mirrored-By: mirror\r\n\r\n"[..]
    );

    let admin = Parsed::new(b"GET /admin HTTP/1.1\r\nHost: api\r\n\r\n");
    assert_eq!(
        policy.decide(&admin, connection, 7, 2_000),
        Decision::Skip(SkipReason::Path)
    );
    assert_eq!(policy.counts().mirrored, 1);
    assert_eq!(policy.counts().skipped(SkipReason::Path), 1);
}

#[test]
fn check_config_reports_the_fixture_files() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/config");
    for name in ["full.toml", "minimal.toml"] {
        let config = Config::load(format!("{dir}/{name}")).unwrap();
        let printed = config.to_toml_string();
        assert_eq!(Config::from_toml(&printed, name).unwrap(), config);
    }
}
