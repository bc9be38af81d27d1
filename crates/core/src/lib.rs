//! Switchboard's domain core: who a user is, what a chat message and a
//! notification are and when they are valid, the error codes and times of the
//! wire contract, and the ports through which the core reaches the outside world.
//!
//! No transport and no database lives here. Transports (Socket.IO, HTTP) are in
//! the `switchboard` server crate; the adapters behind the ports are in
//! `switchboard-store` (SQLite, PostgreSQL) and `switchboard-broker` (in-process,
//! Redis, Redis Cluster).

pub mod auth;
pub mod chat;
pub mod error;
pub mod notify;
pub mod ports;
pub mod time;

pub use auth::{Authenticator, Claims, Role, User, WorkspaceClaim};
pub use chat::{Message, MessageLimits, NewMessage, Window};
pub use error::{Error, ErrorCode};
pub use notify::{NewNotification, Notification};
pub use ports::{
    Broker, BrokerError, BrokerEvent, BrokerHandler, DocumentId, DocumentLog, DocumentStore,
    DocumentSummary, DocumentVersion, DocumentVersions, MembershipStore, MessageStore,
    NotificationStore, Presence, PresenceEntry, RecoverySession, RecoveryStore, Store, StoreError,
    StoreHealth, Topic,
};
