//! The error codes of the wire contract (`{ ok: false, error: CODE, message }`
//! over Socket.IO, `{ error: CODE, message }` over HTTP) and the error type
//! that carries one. HTTP status mapping lives with the HTTP transport.

use std::fmt;

/// One of the codes a client can receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `unauthorized` (HTTP 401): a missing, forged or expired token, or a wrong API key.
    Unauthorized,
    /// `invalid` (HTTP 400): a malformed payload, wrong types, a bad id, an unknown event.
    Invalid,
    /// `forbidden` (HTTP 403): no access to the workspace, or the socket has not joined it.
    Forbidden,
    /// `not_found` (HTTP 404): no such resource (or someone else's).
    NotFound,
    /// `too_large` (HTTP 413): content, data or a request body over its limit.
    TooLarge,
    /// `rate_limited` (HTTP 429): too many events, streams or document clients.
    RateLimited,
    /// `internal` (HTTP 500): the server failed; the detail is logged, not sent.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::Unauthorized,
        ErrorCode::Invalid,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
    ];

    /// The code as sent on the wire, in snake case (`not_found`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a client is told about: a code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// The human-readable message shown to the client.
    pub message: String,
}

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An [`ErrorCode::Invalid`] error with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    /// An [`ErrorCode::Forbidden`] error with the message `Access denied`.
    pub fn forbidden() -> Self {
        Self::new(ErrorCode::Forbidden, "Access denied")
    }

    /// An [`ErrorCode::Unauthorized`] error with the message `Authentication failed`.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "Authentication failed")
    }

    /// An [`ErrorCode::NotFound`] error with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// An internal failure: the detail goes to the log, the client gets a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(ErrorCode::Internal, "Internal error")
    }
}

impl From<crate::ports::StoreError> for Error {
    fn from(e: crate::ports::StoreError) -> Self {
        Error::internal(e)
    }
}

impl From<crate::ports::BrokerError> for Error {
    fn from(e: crate::ports::BrokerError) -> Self {
        Error::internal(e)
    }
}
