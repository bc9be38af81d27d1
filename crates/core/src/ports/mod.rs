//! The ports: the traits through which the core reaches storage and other
//! nodes, one file per concern. Adapters: `switchboard-store` (SQLite,
//! PostgreSQL) and `switchboard-broker` (in-process; Redis pub/sub and Redis
//! Cluster for many nodes).

mod broker;
mod presence;
mod store;

pub use broker::*;
pub use presence::*;
pub use store::*;
