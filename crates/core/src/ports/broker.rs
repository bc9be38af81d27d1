//! The Broker port: fan-out between nodes, by [`Topic`], with what happens on
//! the way reported as [`BrokerEvent`]s. Adapters: `switchboard-broker`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::store::DocumentId;

/// The boxed cause of a [`BrokerError`].
pub type ErrorSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a [`Broker`] or [`Presence`](super::Presence) call failed.
///
/// The message includes the cause's own message (the server logs errors by
/// their `Display`), and [`source`](std::error::Error::source) gives the cause.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker URL is malformed or names no supported broker. Not
    /// transient: the configuration must change.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker, or the shard that serves the topic or key, cannot be
    /// reached right now: connection refused, lost or timed out, cluster
    /// resharding or failing over. Transient: the same call may succeed later.
    #[error("broker unavailable: {context}{}", Cause(.source))]
    Unavailable {
        /// What was being done.
        context: String,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
    /// The broker refused the command or answered something this adapter
    /// does not understand. Not transient.
    #[error("broker failed: {context}{}", Cause(.source))]
    Failed {
        /// What was being done.
        context: String,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
}

impl BrokerError {
    /// A [`BrokerError::Unavailable`] error.
    pub fn unavailable(context: impl Into<String>, source: Option<ErrorSource>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source,
        }
    }

    /// A [`BrokerError::Failed`] error.
    pub fn failed(context: impl Into<String>, source: Option<ErrorSource>) -> Self {
        Self::Failed {
            context: context.into(),
            source,
        }
    }

    /// Whether the same call may succeed later without any change on this side.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// `: <cause>` when there is a cause.
struct Cause<'a>(&'a Option<ErrorSource>);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

/// What a node publishes and subscribes to. Its broker channel name, the one
/// encoding of topics, is [`Topic::channel`] and is read back by
/// [`Topic::from_channel`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A workspace's chat room: messages, presence and typing (`ws:<id>`).
    Workspace(String),
    /// A user's notifications (`user:<id>`).
    User(String),
    /// A collaborative document (`doc:<workspace>\n<name>`; workspace ids
    /// hold no control characters).
    Document(DocumentId),
    /// Changes of access (memberships and roles), for every node at once
    /// (`access`): each node re-applies them to its live connections.
    Access,
}

const ACCESS_CHANNEL: &str = "access";
const WORKSPACE_CHANNEL: &str = "ws:";
const USER_CHANNEL: &str = "user:";
const DOCUMENT_CHANNEL: &str = "doc:";

impl Topic {
    /// The broker channel name of this topic (adapters may add a prefix).
    pub fn channel(&self) -> String {
        match self {
            Topic::Workspace(id) => format!("{WORKSPACE_CHANNEL}{id}"),
            Topic::User(id) => format!("{USER_CHANNEL}{id}"),
            Topic::Document(doc) => {
                format!("{DOCUMENT_CHANNEL}{}\n{}", doc.workspace, doc.name)
            }
            Topic::Access => ACCESS_CHANNEL.to_owned(),
        }
    }

    /// The topic of a channel name made by [`Topic::channel`]; `None` for any
    /// other name.
    pub fn from_channel(channel: &str) -> Option<Topic> {
        if channel == ACCESS_CHANNEL {
            Some(Topic::Access)
        } else if let Some(id) = channel.strip_prefix(WORKSPACE_CHANNEL) {
            Some(Topic::Workspace(id.to_owned()))
        } else if let Some(id) = channel.strip_prefix(USER_CHANNEL) {
            Some(Topic::User(id.to_owned()))
        } else {
            let (workspace, name) = channel.strip_prefix(DOCUMENT_CHANNEL)?.split_once('\n')?;
            Some(Topic::Document(DocumentId {
                workspace: workspace.to_owned(),
                name: name.to_owned(),
            }))
        }
    }
}

impl fmt::Display for Topic {
    /// For logs: `workspace <id>`, `user <id>`, `document <workspace>/<name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Workspace(id) => write!(f, "workspace {id}"),
            Topic::User(id) => write!(f, "user {id}"),
            Topic::Document(doc) => write!(f, "document {}/{}", doc.workspace, doc.name),
            Topic::Access => write!(f, "access changes"),
        }
    }
}

/// What a broker tells its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerEvent {
    /// A payload published on a topic this node subscribes to.
    Delivery {
        /// Where it was published.
        topic: Topic,
        /// What was published, as published.
        payload: Bytes,
    },
    /// Subscriptions were lost and are in place again: whatever was published
    /// in between was missed. Listeners that must not miss anything catch up
    /// from the Store. May come more than once for one outage (a Redis
    /// Cluster reports each shard).
    Resubscribed,
    /// The connection to the broker (or to one of its shards) was lost:
    /// publishes may fail and deliveries be missed until [`BrokerEvent::Up`].
    Down,
    /// The connection is back after a [`BrokerEvent::Down`] (on a Redis
    /// Cluster: to every shard). Catching up belongs to
    /// [`BrokerEvent::Resubscribed`], which comes once subscriptions are in
    /// place again.
    Up,
}

/// Receives every [`BrokerEvent`], on the broker's own tasks (the in-process
/// broker: on the publisher's task). Must not block and must not wait on the
/// broker.
pub type BrokerHandler = Arc<dyn Fn(BrokerEvent) + Send + Sync>;

/// Fan-out between nodes. A node subscribes to the topics it has local
/// listeners for; a publish reaches every subscribed node, this one included,
/// in publish order per topic. Subscriptions are counted: a topic stays
/// subscribed until as many `unsubscribe`s as `subscribe`s.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sends `payload` to every node subscribed to `topic`.
    async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BrokerError>;
    /// Adds a subscription to `topic`.
    async fn subscribe(&self, topic: &Topic) -> Result<(), BrokerError>;
    /// Removes a subscription to `topic` (nothing if there is none).
    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BrokerError>;
    /// Reachable and answering.
    async fn ping(&self) -> Result<(), BrokerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_their_channel() {
        let topics = [
            Topic::Workspace("w:1/x".into()),
            Topic::Workspace(String::new()),
            Topic::User("user:ws:ü".into()),
            Topic::Document(DocumentId {
                workspace: "w:1/x".into(),
                name: "notes 2\nmore".into(),
            }),
            Topic::Document(DocumentId {
                workspace: "ws:".into(),
                name: String::new(),
            }),
        ];
        for topic in topics {
            assert_eq!(Topic::from_channel(&topic.channel()), Some(topic));
        }
        assert_eq!(Topic::Workspace("a".into()).channel(), "ws:a");
        assert_eq!(Topic::User("a".into()).channel(), "user:a");
        for other in ["", "ws", "doc:no-newline", "\0resubscribed", "users:a"] {
            assert_eq!(Topic::from_channel(other), None, "{other:?}");
        }
    }

    #[test]
    fn only_unavailability_is_transient() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = BrokerError::unavailable("publish", Some(Box::new(io)));
        assert!(e.is_transient());
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().starts_with("broker unavailable: publish: "));
        assert!(!BrokerError::failed("subscribe", None).is_transient());
        assert_eq!(
            BrokerError::failed("subscribe", None).to_string(),
            "broker failed: subscribe"
        );
        let url = BrokerError::InvalidUrl {
            url: "x".into(),
            reason: "y".into(),
        };
        assert!(!url.is_transient());
    }
}
