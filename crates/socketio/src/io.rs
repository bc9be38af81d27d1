//! [`SocketIo`]: the Socket.IO server, built once with its namespaces and served
//! as a tower service on the Socket.IO path (usually `/socket.io/`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{self, Client};
use crate::engine::{CloseReason, Engine, EngineConfig, EngineHandler, Message, Session};
use crate::handler::Handler;
use crate::namespace::{Namespace, NamespaceInner};
use crate::timer::FifoTimer;

/// Socket.IO settings above Engine.IO.
#[derive(Clone, Debug)]
pub struct IoConfig {
    /// Time a new connection has to join a namespace before it is closed.
    pub connect_timeout: Duration,
    /// Connection-state recovery: CONNECT answers carry a `pid`, and a CONNECT
    /// with `pid` and `offset` reaches [`Handler::connect`] as a recovery request.
    pub recovery: bool,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(45),
            recovery: false,
        }
    }
}

pub(crate) struct IoInner {
    pub(crate) config: IoConfig,
    pub(crate) namespaces: HashMap<String, Arc<NamespaceInner>>,
    connect_timer: FifoTimer<Weak<Session<Client>>>,
    next_key: AtomicU64,
}

impl IoInner {
    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }
}

/// Builds a [`SocketIo`].
#[derive(Default)]
pub struct SocketIoBuilder {
    engine: EngineConfig,
    io: IoConfig,
    namespaces: HashMap<String, Arc<dyn Handler>>,
}

impl SocketIoBuilder {
    /// Sets the Engine.IO settings (default: [`EngineConfig::default`]).
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// Sets the Socket.IO settings (default: [`IoConfig::default`]).
    pub fn io_config(mut self, config: IoConfig) -> Self {
        self.io = config;
        self
    }

    /// Serves a namespace (`"/"` is the main one). Namespaces are fixed at build time;
    /// a CONNECT to any other gets `Invalid namespace`.
    pub fn namespace(mut self, name: &str, handler: impl Handler) -> Self {
        self.namespaces.insert(name.to_owned(), Arc::new(handler));
        self
    }

    /// Builds the server with the namespaces given so far.
    pub fn build(self) -> SocketIo {
        let namespaces = self
            .namespaces
            .into_iter()
            .map(|(name, handler)| (name.clone(), Arc::new(NamespaceInner::new(name, handler))))
            .collect();
        let inner = Arc::new(IoInner {
            config: self.io,
            namespaces,
            connect_timer: FifoTimer::new(|session: Weak<Session<Client>>, _| {
                if let Some(session) = session.upgrade() {
                    if !session.state().has_joined() {
                        session.close(CloseReason::ServerClose);
                    }
                }
            }),
            next_key: AtomicU64::new(0),
        });
        SocketIo {
            engine: Engine::new(self.engine, IoHandler { inner }),
        }
    }
}

/// The Socket.IO server. Clone it freely; mount [`SocketIo::service`] on the path.
#[derive(Clone)]
pub struct SocketIo {
    engine: Engine<IoHandler>,
}

impl SocketIo {
    /// A builder with default settings and no namespace.
    pub fn builder() -> SocketIoBuilder {
        SocketIoBuilder::default()
    }

    /// The HTTP service (a `tower::Service`) answering Engine.IO requests.
    pub fn service(&self) -> Engine<IoHandler> {
        self.engine.clone()
    }

    /// A namespace given to the builder.
    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.engine
            .handler()
            .inner
            .namespaces
            .get(name)
            .cloned()
            .map(Namespace)
    }

    /// The Engine.IO settings the server was built with.
    pub fn engine_config(&self) -> &EngineConfig {
        self.engine.config()
    }
}

/// Connects Engine.IO sessions to the Socket.IO layer.
pub struct IoHandler {
    inner: Arc<IoInner>,
}

impl EngineHandler for IoHandler {
    type State = Client;

    fn new_state(&self) -> Client {
        Client::new(self.inner.clone())
    }

    fn on_open(&self, session: &Arc<Session<Client>>) {
        let deadline = Instant::now() + self.inner.config.connect_timeout;
        self.inner
            .connect_timer
            .schedule(deadline, Arc::downgrade(session));
    }

    async fn on_message(&self, session: &Arc<Session<Client>>, message: Message) {
        client::on_message(session, message).await
    }
}
