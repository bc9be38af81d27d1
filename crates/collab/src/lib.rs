//! Collaborative editing for Switchboard, without I/O: the y-websocket wire
//! format ([`protocol`]) and a document with its awareness states
//! ([`Document`]), both on the `yrs` crate (the Rust port of Yjs).
//!
//! What does not live here: sockets, persistence and fan-out between nodes.
//! The server drives a [`Document`] per active document, appends every update
//! to its Store before relaying it, and carries updates between nodes through
//! its Broker.

pub mod document;
pub mod json;
pub mod protocol;
mod structs;
pub mod waiting;

pub use document::{AwarenessChanges, DecodedUpdate, Document, DocumentError};
pub use protocol::{ClientMessage, ProtocolError};
pub use yrs::sync::AwarenessUpdate;
pub use yrs::{ClientID, StateVector, Update};
