//! Socket.IO packet parsing on arbitrary UTF-8, and an encode/parse round trip.
//!
//! Whatever `packet::parse` accepts as an EVENT/ACK (binary or not) is re-encoded
//! with `encode_event`/`encode_ack`; the result, minus its leading Engine.IO `4`,
//! must parse again to the same kind, namespace, attachment count, ack id and payload
//! (object keys in the same order too: the crate keeps arrival order).
//!
//! Floats are compared exactly by default. `SWITCHBOARD_FUZZ_FLOAT_ULPS=N` in the
//! environment lets two floats differ by up to N units in the last place, to keep
//! fuzzing past a known float round-trip imprecision (serde_json parses
//! floats with up to 1 ULP error unless its `float_roundtrip` feature is enabled).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_socketio::packet::{encode_ack, encode_event, parse, PacketType, Payload};

fn float_ulps() -> u64 {
    static ULPS: OnceLock<u64> = OnceLock::new();
    *ULPS.get_or_init(|| match std::env::var("SWITCHBOARD_FUZZ_FLOAT_ULPS") {
        Ok(v) => v
            .parse()
            .expect("SWITCHBOARD_FUZZ_FLOAT_ULPS must be a non-negative integer"),
        Err(_) => 0,
    })
}

fn ulp_distance(x: f64, y: f64) -> u64 {
    if x == y {
        0
    } else if x.is_sign_negative() != y.is_sign_negative() {
        u64::MAX
    } else {
        x.to_bits().abs_diff(y.to_bits())
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            ulp_distance(x.as_f64().unwrap(), y.as_f64().unwrap()) <= float_ulps()
        }
        (Value::Array(x), Value::Array(y)) => same_values(x, y),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((k, v), (l, w))| k == l && same_value(v, w))
        }
        _ => a == b,
    }
}

fn same_values(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same_value(v, w))
}

fn same_payload(a: &Payload, b: &Payload) -> bool {
    match (a, b) {
        (Payload::Event(n, x), Payload::Event(m, y)) => n == m && same_values(x, y),
        (Payload::Ack(x), Payload::Ack(y)) => same_values(x, y),
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = parse(text) else {
        return;
    };

    // `args` is a `&Vec<Value>`, so it is passed as-is: `Vec<Value>` is "as many
    // arguments as it holds" (a `&&Vec` would be one array argument instead).
    let encoded = match &packet.payload {
        Payload::Event(name, args) => encode_event(
            &packet.namespace,
            name,
            args,
            packet.attachments,
            packet.ack_id,
        ),
        Payload::Ack(args) => encode_ack(
            &packet.namespace,
            packet.ack_id.expect("parse accepted an ACK without an ack id"),
            args,
            packet.attachments,
        ),
        Payload::None | Payload::Connect(_) => return,
    }
    .unwrap_or_else(|e| panic!("re-encoding {text:?} failed: {e}"));

    let encoded = encoded.as_str();
    let inner = encoded
        .strip_prefix('4')
        .unwrap_or_else(|| panic!("encoded frame {encoded:?} lacks the Engine.IO `4`"));
    let again = parse(inner)
        .unwrap_or_else(|e| panic!("{text:?} re-encoded as {inner:?}, which fails to parse: {e}"));

    // The encoders choose the binary type exactly when there are attachments,
    // so a `5`/`6` announcing 0 attachments comes back as `2`/`3`: same packet.
    let expected_kind = match (packet.kind, packet.attachments) {
        (PacketType::BinaryEvent, 0) => PacketType::Event,
        (PacketType::BinaryAck, 0) => PacketType::Ack,
        (kind, _) => kind,
    };
    let what = format!("{text:?} -> {inner:?}");
    assert_eq!(again.kind, expected_kind, "kind: {what}");
    assert_eq!(again.namespace, packet.namespace, "namespace: {what}");
    assert_eq!(again.attachments, packet.attachments, "attachments: {what}");
    assert_eq!(again.ack_id, packet.ack_id, "ack id: {what}");
    assert!(
        same_payload(&again.payload, &packet.payload),
        "payload: {what}\n  parsed:    {:?}\n  reparsed:  {:?}",
        packet.payload,
        again.payload
    );
});
