use serde_json::json;

use super::*;

#[test]
fn volatile_names() {
    for name in [
        "id",
        "ID",
        "uuid",
        "request_id",
        "requestId",
        "X-Request-Id",
        "trace_id",
        "ts",
        "timestamp",
        "created_at",
        "createdAt",
        "Updated-At",
        "nonce",
        "etag",
        "date",
    ] {
        assert!(name_is_volatile(name), "{name}");
    }
    for name in [
        "user_id", "price", "name", "items", "status", "total", "identity", "times",
    ] {
        assert!(!name_is_volatile(name), "{name}");
    }
}

#[test]
fn volatile_values() {
    for value in [
        json!("123e4567-e89b-12d3-a456-426614174000"),
        json!("4bf92f3577b34da6a3ce929d0e0e4736"),
        json!("507f1f77bcf86cd799439011"),
        json!("2024-05-01T12:00:00Z"),
        json!("2024-05-01 12:00:00.123456+02:00"),
        json!("2024-05-01T12:00+0200"),
        json!("Sun, 06 Nov 1994 08:49:37 GMT"),
        json!(1_714_564_800),
        json!(1_714_564_800_123_u64),
        json!(1_714_564_800.5),
        json!("1714564800"),
    ] {
        assert!(value_is_volatile(&value), "{value}");
    }
    for value in [
        json!("hello"),
        json!("2024-05-01"),
        json!("2024-05-01T12:00:00X"),
        json!("12345"),
        json!(19.99),
        json!(42),
        json!(true),
        json!(null),
        json!([1_714_564_800]),
        json!("123e4567-e89b-12d3-a456-42661417400g"),
    ] {
        assert!(!value_is_volatile(&value), "{value}");
    }
}
