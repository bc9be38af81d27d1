//! Chat messages: their shape on the wire, the rules a new one must meet, and
//! the history window rules shared by the `history` event and the HTTP API.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::error::{Error, ErrorCode};
use crate::time::rfc3339_millis;

/// Longest workspace id, user id or client message id accepted.
pub const MAX_ID_CHARS: usize = 128;

/// A message about to be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The workspace it is posted in.
    pub workspace_id: String,
    /// The author.
    pub user_id: String,
    /// The text, checked by [`MessageLimits::check_content`].
    pub content: String,
    /// An optional identifier chosen by the sender, echoed back as `clientMsgId`.
    pub client_msg_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A stored message. Ids are one increasing sequence across all workspaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Assigned by the Store; also the recovery offset.
    pub id: i64,
    /// The workspace it was posted in.
    pub workspace_id: String,
    /// The author.
    pub user_id: String,
    /// The text.
    pub content: String,
    /// The sender's optional identifier, echoed back as `clientMsgId`.
    pub client_msg_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl Serialize for Message {
    /// `{ id, workspaceId, userId, content, createdAt, clientMsgId? }`
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("workspaceId", &self.workspace_id)?;
        map.serialize_entry("userId", &self.user_id)?;
        map.serialize_entry("content", &self.content)?;
        map.serialize_entry("createdAt", &rfc3339_millis(self.created_at))?;
        if let Some(id) = &self.client_msg_id {
            map.serialize_entry("clientMsgId", id)?;
        }
        map.end()
    }
}

/// Limits on new messages.
#[derive(Clone, Copy, Debug)]
pub struct MessageLimits {
    /// Longest content, in Unicode code points.
    pub max_chars: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self { max_chars: 5000 }
    }
}

impl MessageLimits {
    /// Non-empty and at most `max_chars` code points; longer is refused, never cut.
    pub fn check_content(&self, content: &str) -> Result<(), Error> {
        if content.is_empty() {
            return Err(Error::invalid("content must be a non-empty string"));
        }
        if content.chars().count() > self.max_chars {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!("content exceeds {} characters", self.max_chars),
            ));
        }
        Ok(())
    }
}

/// Checks an identifier (workspace, client message id): 1 to 128 characters, no control characters.
pub fn check_id(what: &str, id: &str) -> Result<(), Error> {
    let len = id.chars().count();
    if len == 0 || len > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} must be 1 to {MAX_ID_CHARS} printable characters"
        )));
    }
    Ok(())
}

/// [`check_id`] for a name that stands as one path segment (a collaborative
/// document's name, and the workspace id beside it in `/collab/{w}/{name}`):
/// also not `.` or `..`, and without `/` or `\`, so that no name reads as a
/// path wherever it ends up.
pub fn check_path_segment(what: &str, name: &str) -> Result<(), Error> {
    check_id(what, name)?;
    if name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(Error::invalid(format!(
            "{what} must not be . or .. nor contain / or \\"
        )));
    }
    Ok(())
}

/// Which messages of a workspace to read. Results are always oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Only ids lower than this.
    pub before: Option<i64>,
    /// Only ids higher than this.
    pub after: Option<i64>,
    /// At most this many messages: 1 to [`Window::MAX_LIMIT`].
    pub limit: u32,
}

impl Window {
    /// The `limit` when none is given.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// The largest `limit`; larger ones are clamped to it.
    pub const MAX_LIMIT: u32 = 200;

    /// Defaults `limit` to 50 and clamps it to 200. No cursor: the latest messages;
    /// `before`: those just before it; `after`: those just after it; both: those in between.
    pub fn new(before: Option<i64>, after: Option<i64>, limit: Option<i64>) -> Result<Self, Error> {
        let limit = match limit {
            None => Self::DEFAULT_LIMIT,
            Some(l) if l < 1 => return Err(Error::invalid("limit must be a positive integer")),
            Some(l) => l.min(i64::from(Self::MAX_LIMIT)) as u32,
        };
        if before.is_some_and(|b| b < 0) || after.is_some_and(|a| a < 0) {
            return Err(Error::invalid("before and after must be message ids"));
        }
        Ok(Self {
            before,
            after,
            limit,
        })
    }

    /// Whether the window takes the newest messages that match (no `after`), or
    /// the oldest (`after` given: the messages just after it).
    pub fn from_newest(&self) -> bool {
        self.after.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_the_wire_shape() {
        let m = Message {
            id: 7,
            workspace_id: "w1".into(),
            user_id: "alice".into(),
            content: "hi".into(),
            client_msg_id: Some("c1".into()),
            created_at: 0,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"id":7,"workspaceId":"w1","userId":"alice","content":"hi","createdAt":"1970-01-01T00:00:00.000Z","clientMsgId":"c1"}"#
        );
    }

    #[test]
    fn counts_code_points_not_bytes() {
        let limits = MessageLimits { max_chars: 3 };
        assert!(limits.check_content("héé").is_ok());
        assert!(limits.check_content("😀😀😀").is_ok());
        assert_eq!(
            limits.check_content("abcd").unwrap_err().code,
            ErrorCode::TooLarge
        );
        assert_eq!(
            limits.check_content("").unwrap_err().code,
            ErrorCode::Invalid
        );
    }

    #[test]
    fn clamps_and_defaults_the_window() {
        assert_eq!(Window::new(None, None, None).unwrap().limit, 50);
        assert_eq!(Window::new(None, None, Some(5000)).unwrap().limit, 200);
        assert!(Window::new(None, None, Some(0)).is_err());
        assert!(Window::new(Some(-1), None, None).is_err());
    }
}
