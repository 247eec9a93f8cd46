//! Every class of invalid file reports the first problem at the offending value's `line:col`.

use super::*;

/// A valid target on lines 1-4; tests append or replace lines.
const TARGET: &str = "[[target]]\nname = \"search\"\nport = 8080\nshadow = \"http://s:8080\"\n";

fn error(text: &str) -> String {
    match Config::from_toml(text, "t.toml") {
        Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// The base target plus `line` as line 5.
fn with_line(line: &str) -> String {
    format!("{TARGET}{line}\n")
}

#[test]
fn error_carries_file_line_and_column() {
    let error = Config::from_toml(&with_line("queue = 0"), "conf/mirror.toml").unwrap_err();
    let ConfigError::Invalid {
        file,
        line,
        col,
        message,
    } = error
    else {
        panic!("{error:?}");
    };
    assert_eq!((file.as_str(), line, col), ("conf/mirror.toml", 5, 9));
    assert_eq!(message, "queue = 0 is out of range: allowed 1..=4294967295");
}

#[test]
fn syntax_errors_point_at_the_problem() {
    let message = error(&with_line("max_rps = "));
    assert!(message.starts_with("t.toml:5:11: "), "{message}");
}

#[test]
fn type_errors_say_what_is_expected() {
    assert_eq!(
        error(&TARGET.replace("port = 8080", "port = \"8080\"")),
        "t.toml:3:8: invalid type: string \"8080\", expected an integer"
    );
    assert_eq!(
        error(&with_line("allow_writes = \"yes\"")),
        "t.toml:5:16: invalid type: string \"yes\", expected true or false"
    );
    assert_eq!(
        error(&with_line("sample_percent = \"10%\"")),
        "t.toml:5:18: invalid type: string \"10%\", expected a number"
    );
}

#[test]
fn range_errors_say_what_is_allowed() {
    assert_eq!(
        error(&TARGET.replace("port = 8080", "port = 70000")),
        "t.toml:3:8: port = 70000 is out of range: allowed 1..=65535"
    );
    assert_eq!(
        error(&with_line("sample_percent = 100.5")),
        "t.toml:5:18: sample_percent = 100.5 is out of range: allowed 0..=100 (fractions allowed)"
    );
    assert_eq!(
        error(&with_line("sample_percent = -1")),
        "t.toml:5:18: sample_percent = -1 is out of range: allowed 0..=100 (fractions allowed)"
    );
    assert_eq!(
        error(&format!("[capture]\nring_buffer_bytes = 1000000\n{TARGET}")),
        "t.toml:2:21: ring_buffer_bytes = 1000000 is invalid: expected a power of two from 4096 to 2147483648"
    );
    assert_eq!(
        error(&format!("[limits]\nidle_timeout_secs = 0\n{TARGET}")),
        "t.toml:2:21: idle_timeout_secs = 0 is out of range: allowed 1..=4294967295"
    );
    assert_eq!(
        error(&format!(
            "[limits]\ncapture_queue_bytes = 1048575\n{TARGET}"
        )),
        "t.toml:2:23: capture_queue_bytes = 1048575 is out of range: allowed 1048576..=17179869184"
    );
    assert_eq!(
        error(&format!(
            "[limits]\nmax_connections = 10\ncapture_queue_bytes = 17179869185\n{TARGET}"
        )),
        "t.toml:3:23: capture_queue_bytes = 17179869185 is out of range: allowed 1048576..=17179869184"
    );
    assert_eq!(
        error(&format!(
            "[limits]\ncapture_queue_bytes = \"64MiB\"\n{TARGET}"
        )),
        "t.toml:2:23: invalid type: string \"64MiB\", expected an integer"
    );
    assert_eq!(
        error(&with_line("concurrency = 100000")),
        "t.toml:5:15: concurrency = 100000 is out of range: allowed 1..=65535"
    );
}

#[test]
fn unknown_keys_are_errors_not_ignored() {
    let message = error(&with_line("sample = 5"));
    assert!(
        message.starts_with("t.toml:5:1: unknown field `sample`, expected one of `name`, `port`"),
        "{message}"
    );
    let message = error(&format!("[capture]\ninterface = [\"eth0\"]\n{TARGET}"));
    assert!(
        message.starts_with(
            "t.toml:2:1: unknown field `interface`, expected `interfaces` or `ring_buffer_bytes`"
        ),
        "{message}"
    );
    let message = error(&format!("[metric]\nlisten = \"0.0.0.0:1\"\n{TARGET}"));
    assert!(
        message.starts_with("t.toml:1:2: unknown field `metric`"),
        "{message}"
    );
    let message = error(&with_line("paths = { allow = [], except = [] }"));
    assert!(
        message.starts_with("t.toml:5:23: unknown field `except`"),
        "{message}"
    );
}

#[test]
fn missing_required_target_fields_are_named() {
    let message = error("[[target]]\nname = \"a\"\nport = 1\n");
    assert!(
        message.starts_with("t.toml:2:8: target `a` has no shadow: add `shadow = "),
        "{message}"
    );
}

#[test]
fn bad_regex_points_at_the_pattern() {
    assert_eq!(
        error(&with_line("paths = { deny = [\"^/ok\", \"(unclosed\"] }")),
        "t.toml:5:27: invalid regex `(unclosed`: unclosed group"
    );
}

#[test]
fn bad_shadow_urls() {
    let shadow = |url: &str| error(&TARGET.replace("\"http://s:8080\"", &format!("\"{url}\"")));
    assert_eq!(
        shadow("https://s:8443"),
        "t.toml:4:10: invalid shadow URL `https://s:8443`: https shadows are not supported yet; use http://host[:port]"
    );
    assert_eq!(
        shadow("ftp://s"),
        "t.toml:4:10: invalid shadow URL `ftp://s`: scheme `ftp` is not supported; expected http://host[:port]"
    );
    assert_eq!(
        shadow("search-v2:8080"),
        "t.toml:4:10: invalid shadow URL `search-v2:8080`: scheme `search-v2` is not supported; expected http://host[:port]"
    );
    assert_eq!(
        shadow("not a url"),
        "t.toml:4:10: invalid shadow URL `not a url`: relative URL without a base; expected http://host[:port]"
    );
    assert!(
        shadow("http://s:8080/v2").starts_with("t.toml:4:10: invalid shadow URL `http://s:8080/v2`: expected http://host[:port] without credentials, path"),
    );
    assert!(shadow("http://u:p@s").starts_with("t.toml:4:10: "));
    assert!(shadow("http://s?x=1").starts_with("t.toml:4:10: "));
}

#[test]
fn bad_host_modes() {
    assert_eq!(
        error(&with_line("host = \"prefix:x\"")),
        "t.toml:5:8: invalid host mode `prefix:x`: expected \"suffix:<s>\", \"shadow\", \"keep\" or \"literal:<host>\""
    );
    assert!(
        error(&with_line("host = \"suffix:\"")).starts_with("t.toml:5:8: invalid host suffix ``")
    );
    assert!(
        error(&with_line("host = \"suffix:a b\"")).starts_with("t.toml:5:8: invalid host suffix")
    );
    assert!(
        error(&with_line("host = \"literal:a,b\"")).starts_with("t.toml:5:8: invalid literal host")
    );
}

#[test]
fn bad_sample_by() {
    assert_eq!(
        error(&with_line("sample_by = \"user\"")),
        "t.toml:5:13: invalid sample_by `user`: expected \"request\", \"connection\" or \"header:<Name>\""
    );
    assert!(
        error(&with_line("sample_by = \"header:\""))
            .starts_with("t.toml:5:13: invalid sample_by `header:`: `` is not a header name")
    );
    assert!(error(&with_line("sample_by = \"header:X User\"")).starts_with("t.toml:5:13: "));
}

#[test]
fn writes_need_allow_writes() {
    assert_eq!(
        error(&with_line("methods = [\"GET\", \"POST\"]")),
        "t.toml:5:19: `POST` is a write method: mirroring POST/PUT/PATCH/DELETE (or any method other than GET, HEAD, OPTIONS, TRACE) needs allow_writes = true in this target"
    );
    // Any unsafe method, not only the four well-known ones.
    assert!(
        error(&with_line("methods = [\"PURGE\"]"))
            .starts_with("t.toml:5:12: `PURGE` is a write method")
    );
    // allow_writes is honoured wherever it appears in the table.
    let accepted = format!("{TARGET}methods = [\"POST\"]\nallow_writes = true\n");
    assert_eq!(
        Config::from_toml(&accepted, "t.toml").unwrap().targets[0].methods,
        ["POST"]
    );
}

#[test]
fn method_list_problems() {
    assert_eq!(
        error(&with_line("methods = [\"GET\", \"get\"]")),
        "t.toml:5:19: methods are case-sensitive: `get` never matches; write `GET`"
    );
    assert_eq!(
        error(&with_line("methods = [\"GET\", \"GET\"]")),
        "t.toml:5:19: method `GET` is listed twice"
    );
    assert!(error(&with_line("methods = []")).starts_with("t.toml:5:11: methods is empty"));
    assert!(
        error(&with_line("methods = [\"G T\"]")).starts_with("t.toml:5:12: invalid method `G T`")
    );
}

#[test]
fn targets_are_required_and_unique() {
    let none = "[metrics]\nlisten = \"0.0.0.0:1\"\n";
    assert_eq!(
        error(none),
        "t.toml:1:1: no [[target]] defined: at least one target (name, port, shadow) is required"
    );
    assert!(error("target = []\n").starts_with("t.toml:1:10: no [[target]] defined"));
    let second = TARGET.replace("port = 8080", "port = 9090");
    assert_eq!(
        error(&format!("{TARGET}{second}")),
        "t.toml:6:8: duplicate target name `search` (first defined on line 2): names must be unique"
    );
    let second = TARGET.replace("search", "other");
    assert_eq!(
        error(&format!("{TARGET}{second}")),
        "t.toml:7:8: port 8080 already belongs to target `search`: each port can have one target"
    );
    assert!(
        error(&TARGET.replace("\"search\"", "\"\"")).starts_with("t.toml:2:8: invalid target name")
    );
}

#[test]
fn header_settings_are_validated() {
    assert_eq!(
        error(&with_line(
            "set_headers = { \"x-a\" = \"1\\r\\nInjected: yes\" }"
        )),
        "t.toml:5:25: invalid value \"1\\r\\nInjected: yes\" for header `x-a`: control characters (CR, LF, ...) and leading or trailing whitespace are not allowed"
    );
    assert_eq!(
        error(&with_line("set_headers = { \"x a\" = \"1\" }")),
        "t.toml:5:17: invalid header name `x a` in set_headers: expected letters, digits and !#$%&'*+-.^_`|~"
    );
    assert!(
        error(&with_line("set_headers = { \"Content-Length\" = \"1\" }"))
            .starts_with("t.toml:5:17: set_headers cannot change `Content-Length`")
    );
    assert!(
        error(&with_line("remove_headers = [\"host\"]"))
            .starts_with("t.toml:5:19: remove_headers cannot change `host`")
    );
    assert!(
        error(&with_line(
            "set_headers = { \"X-A\" = \"1\", \"x-a\" = \"2\" }"
        ))
        .starts_with("t.toml:5:30: header `x-a` is set twice")
    );
    assert!(
        error(&format!(
            "{TARGET}set_headers = {{ \"x-a\" = \"1\" }}\nremove_headers = [\"X-A\"]\n"
        ))
        .starts_with("t.toml:6:19: header `X-A` is both in set_headers and remove_headers")
    );
}

#[test]
fn capture_and_metrics_values_are_validated() {
    assert_eq!(
        error(&format!("[metrics]\nlisten = \"localhost:9477\"\n{TARGET}")),
        "t.toml:2:10: invalid listen address `localhost:9477`: expected ip:port such as 0.0.0.0:9477 or [::]:9477"
    );
    assert!(
        error(&format!(
            "[capture]\ninterfaces = [\"eth0\", \"a-very-long-interface-name\"]\n{TARGET}"
        ))
        .starts_with("t.toml:2:23: invalid interface `a-very-long-interface-name`")
    );
    assert!(
        error(&format!("[capture]\ninterfaces = [\"veth[\"]\n{TARGET}"))
            .starts_with("t.toml:2:15: invalid interface pattern `veth[`")
    );
}

#[test]
fn scopes_and_the_replay_marker_are_checked_where_written() {
    assert_eq!(
        error(&with_line(
            "addresses = [\"10.42.0.0/16\", \"10.42.0.1/16\"]"
        )),
        "t.toml:5:30: `10.42.0.1/16` has host bits under its /16 prefix: write 10.42.0.0/16 for the network, or the address alone for one host"
    );
    assert_eq!(
        error(&with_line("addresses = [\"search\"]")),
        "t.toml:5:14: invalid address `search`: expected an IPv4 or IPv6 address or CIDR, e.g. \"10.42.0.0/16\" or \"10.0.0.7\""
    );
    assert_eq!(
        error(&with_line("addresses = [\"10.0.0.7\", \"10.0.0.7/32\"]")),
        "t.toml:5:26: address 10.0.0.7/32 is listed twice"
    );
    assert_eq!(
        error(&with_line(
            "pods = { namespace = \"shop\", selector = \"app in web\" }"
        )),
        "t.toml:5:41: invalid label selector `app in web`: `web` must be a parenthesised list, e.g. (a,b)"
    );
    assert_eq!(
        error(&with_line("pods = { namespace = \"Shop\" }")),
        "t.toml:5:22: invalid namespace `Shop`: expected a DNS label (lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit)"
    );
    assert_eq!(
        error(&format!("[replay]\nmarker_header = \"x mirror\"\n{TARGET}")),
        "t.toml:2:17: invalid header name `x mirror` in marker_header: expected letters, digits and !#$%&'*+-.^_`|~"
    );
}

#[test]
fn sink_values_are_checked_where_written() {
    let sink = |line: &str| error(&format!("[sink]\n{line}\n{TARGET}"));
    assert_eq!(
        sink("path = \"exchanges.jsonl\""),
        "t.toml:2:8: sink path `exchanges.jsonl` is relative: give an absolute path, e.g. \"/var/log/mirror/exchanges.jsonl\""
    );
    assert_eq!(
        sink("path = \"/var/log/mirror/\""),
        "t.toml:2:8: sink path `/var/log/mirror/` names a directory: give a file, e.g. \"/var/log/mirror/exchanges.jsonl\""
    );
    assert_eq!(
        sink("max_file_bytes = 100"),
        "t.toml:2:18: max_file_bytes = 100 is out of range: allowed 4096..=9223372036854775807"
    );
    assert_eq!(
        sink("max_files = -1"),
        "t.toml:2:13: max_files = -1 is out of range: allowed 0..=1000"
    );
    assert_eq!(
        sink("body_bytes = -5"),
        "t.toml:2:14: body_bytes = -5 is out of range: allowed 0..=4294967295"
    );
    assert_eq!(
        sink("queue_bytes = 1024"),
        "t.toml:2:15: queue_bytes = 1024 is out of range: allowed 65536..=17179869184"
    );
    assert_eq!(
        sink("only = \"diff\""),
        "t.toml:2:8: invalid only `diff`: expected \"all\" or \"differences\""
    );
    assert_eq!(
        sink("redact_headers = [\"cookie\", \"x api key\"]"),
        "t.toml:2:29: invalid header name `x api key` in redact_headers: expected letters, digits and !#$%&'*+-.^_`|~"
    );
    // Pointers are checked at load: the second one lacks its leading '/'.
    assert_eq!(
        sink("redact_fields = [\"/user/email\", \"items/*/card\"]"),
        "t.toml:2:33: invalid JSON Pointer `items/*/card` in redact_fields: it starts with '/' (RFC 6901), e.g. \"/user/email\" or \"/items/*/card\""
    );
    assert_eq!(
        sink("redact_fields = [\"/a~2b\"]"),
        "t.toml:2:18: invalid JSON Pointer `/a~2b` in redact_fields: `~` must be followed by 0 (for ~) or 1 (for /)"
    );
    assert!(
        sink("max_size = 1").starts_with("t.toml:2:1: unknown field `max_size`, expected one of"),
        "{}",
        sink("max_size = 1")
    );
    assert_eq!(
        sink("only = 1"),
        "t.toml:2:8: invalid type: integer `1`, expected a quoted string"
    );
}

#[test]
fn policy_files_are_the_verdict_section_at_top_level() {
    let policy = Config::policy_from_toml(
        "min_samples = 50\nmax_p99_ratio = 2.0\n[fields]\nmin_samples = 20\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(policy.min_samples, 50);
    assert_eq!(policy.max_p99_ratio, 2.0);
    assert_eq!(policy.fields.min_samples, 20);
    assert_eq!(
        policy.max_p50_ratio,
        crate::verdict::Policy::default().max_p50_ratio
    );
    assert_eq!(
        Config::policy_from_toml("", "p.toml").unwrap(),
        crate::verdict::Policy::default()
    );
    let unknown = Config::policy_from_toml("min_samples = 50\nmin_sample = 3\n", "p.toml");
    let message = unknown.unwrap_err().to_string();
    assert!(
        message.starts_with("p.toml:2:1: unknown field `min_sample`"),
        "{message}"
    );
    let range = Config::policy_from_toml("max_p50_ratio = 0.5\n", "p.toml").unwrap_err();
    assert!(
        range
            .to_string()
            .contains("max_p50_ratio = 0.5 is out of range"),
        "{range}"
    );
}
