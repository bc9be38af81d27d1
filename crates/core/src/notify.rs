//! Per-user notifications: their shape on the wire and the rules a new one
//! must meet. Delivery (SSE, long-poll) lives in the server's HTTP transport.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::chat::check_id;
use crate::error::{Error, ErrorCode};
use crate::time::rfc3339_millis;

/// Longest notification type, in characters.
pub const MAX_TYPE_CHARS: usize = 64;

/// A notification about to be stored.
#[derive(Clone, Debug, PartialEq)]
pub struct NewNotification {
    /// The recipient.
    pub user_id: String,
    /// The notification type (`type` on the wire): 1 to [`MAX_TYPE_CHARS`] characters.
    pub kind: String,
    /// Free-form JSON payload, size-limited by [`NewNotification::check`].
    pub data: Value,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A stored notification. Ids are one increasing sequence across all users.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Assigned by the Store.
    pub id: i64,
    /// The recipient.
    pub user_id: String,
    /// The notification type (`type` on the wire).
    pub kind: String,
    /// Free-form JSON payload.
    pub data: Value,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Whether the recipient has marked it read.
    pub read: bool,
}

impl Serialize for Notification {
    /// `{ id, userId, type, data, createdAt, read }`
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("userId", &self.user_id)?;
        map.serialize_entry("type", &self.kind)?;
        map.serialize_entry("data", &self.data)?;
        map.serialize_entry("createdAt", &rfc3339_millis(self.created_at))?;
        map.serialize_entry("read", &self.read)?;
        map.end()
    }
}

impl NewNotification {
    /// Checks the user id, the type (1 to 64 characters) and the size of `data`.
    pub fn check(&self, max_data_bytes: usize) -> Result<(), Error> {
        check_id("userId", &self.user_id)?;
        let type_len = self.kind.chars().count();
        if type_len == 0 || type_len > MAX_TYPE_CHARS {
            return Err(Error::invalid(format!(
                "type must be 1 to {MAX_TYPE_CHARS} characters"
            )));
        }
        let size = serde_json::to_vec(&self.data).map_or(usize::MAX, |v| v.len());
        if size > max_data_bytes {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!("data exceeds {max_data_bytes} bytes"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new(kind: &str, data: Value) -> NewNotification {
        NewNotification {
            user_id: "alice".into(),
            kind: kind.into(),
            data,
            created_at: 0,
        }
    }

    #[test]
    fn checks_type_and_size() {
        assert!(new("mention", json!({"a": 1})).check(100).is_ok());
        assert_eq!(
            new("", json!(1)).check(100).unwrap_err().code,
            ErrorCode::Invalid
        );
        assert_eq!(
            new(&"x".repeat(65), json!(1)).check(100).unwrap_err().code,
            ErrorCode::Invalid
        );
        assert_eq!(
            new("t", json!("x".repeat(200)))
                .check(100)
                .unwrap_err()
                .code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn serialises_the_wire_shape() {
        let n = Notification {
            id: 3,
            user_id: "u".into(),
            kind: "t".into(),
            data: json!({"k": [1]}),
            created_at: 0,
            read: false,
        };
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"id":3,"userId":"u","type":"t","data":{"k":[1]},"createdAt":"1970-01-01T00:00:00.000Z","read":false}"#
        );
    }
}
