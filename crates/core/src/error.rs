//! The error codes of the wire contract (`{ ok: false, error: CODE, message }`
//! over Socket.IO, `{ error: CODE, message }` over HTTP) and the error type
//! that carries one. HTTP status mapping lives with the HTTP transport.

use std::fmt;

/// One of the codes a client can receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthorized,
    Invalid,
    Forbidden,
    NotFound,
    TooLarge,
    RateLimited,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::Unauthorized,
        ErrorCode::Invalid,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
    ];

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
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    pub fn forbidden() -> Self {
        Self::new(ErrorCode::Forbidden, "Access denied")
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "Authentication failed")
    }

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
