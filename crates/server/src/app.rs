//! Wiring: builds the store, broker, authenticator, Socket.IO server and HTTP
//! router from the settings, and runs them until a shutdown signal.

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchboard_core::{
    Authenticator, Broker, BrokerEvent, MessageLimits, Presence, Role, Store, Topic,
};
use switchboard_socketio::{EngineConfig, IoConfig, Namespace, SocketIo};
use tokio::net::TcpListener;

use crate::collab::Collab;
use crate::config::Settings;
use crate::http::dev::DevHooks;
use crate::notify::{Hub, Publisher};
use crate::realtime::catchup::CatchUp;
use crate::realtime::{self, fanout, presence, ConnectionCounts, Typing, Writer};

/// Shared state of one server process: the ports, and one part per transport.
pub struct App {
    pub settings: Settings,
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    /// The Socket.IO side: namespace, ordering task, typing, per-user counts, expiries.
    pub realtime: realtime::Node,
    /// Notification listeners of this node (SSE streams, held polls).
    pub hub: Arc<Hub>,
    /// Stores and publishes notifications, in id order on this node.
    pub notifier: Publisher,
    /// Collaborative documents open on this node.
    pub collab: Arc<Collab>,
    pub metrics: PrometheusHandle,
    /// `serve --dev` only: its test hooks (the demo routes are mounted too).
    pub dev: Option<DevHooks>,
}

impl App {
    /// A user's role in a workspace, `None` without access: the membership
    /// row's role when the backend has written one (it is the live word on
    /// the user), else the token claim's.
    pub async fn role_in(
        &self,
        user: &switchboard_core::User,
        workspace: &str,
    ) -> Result<Option<Role>, switchboard_core::Error> {
        let row = self.store.member_role(&user.id, workspace).await?;
        Ok(row.or_else(|| user.token_role(workspace)))
    }

    /// Whether a user may access (read) a workspace at all.
    pub async fn may_access(
        &self,
        user: &switchboard_core::User,
        workspace: &str,
    ) -> Result<bool, switchboard_core::Error> {
        Ok(self.role_in(user, workspace).await?.is_some())
    }
}

/// Where the broker's events go: each delivery once, to the consumer of its
/// topic's kind; a resubscription to all three.
struct Consumers {
    rooms: Namespace,
    catch_up: Arc<CatchUp>,
    users: Arc<Hub>,
    documents: Arc<Collab>,
    access: std::sync::Weak<App>,
}

impl Consumers {
    fn handle(&self, event: BrokerEvent) {
        match event {
            BrokerEvent::Delivery { topic, payload } => match topic {
                Topic::Workspace(workspace) => {
                    self.catch_up.deliver(&self.rooms, &workspace, payload)
                }
                Topic::User(user) => self.users.deliver(&user, &payload),
                Topic::Document(document) => self.documents.deliver(&document, &payload),
                Topic::Access => crate::access::delivered(&self.access, &payload),
            },
            BrokerEvent::Resubscribed => {
                fanout::resubscribed();
                self.catch_up.broker_back(self.access.clone());
                crate::access::resubscribed(&self.access);
                self.users.resubscribed();
                self.documents.resubscribed();
            }
            BrokerEvent::Down => {
                tracing::warn!("broker connection lost");
                self.catch_up.broker_down();
                metrics::gauge!("switchboard_broker_up").set(0.0);
            }
            BrokerEvent::Up => {
                tracing::info!("broker connection back");
                metrics::gauge!("switchboard_broker_up").set(1.0);
            }
        }
    }
}

/// Random URL-safe text, for dev secrets and keys.
fn random_text() -> String {
    let mut raw = [0u8; 24];
    if getrandom::fill(&mut raw).is_err() {
        raw = [7; 24];
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn build(mut settings: Settings, dev: bool) -> anyhow::Result<(Arc<App>, SocketIo)> {
    if dev {
        // Unset (or empty) ones are made up; set ones are taken as they are.
        for secret in [&mut settings.jwt_secret, &mut settings.api_key] {
            if secret.as_deref().is_none_or(str::is_empty) {
                *secret = Some(random_text());
            }
        }
    }
    let secrets = settings
        .check_jwt_secret()
        .map(str::to_owned)
        .and_then(|secret| settings.check_api_keys().map(|()| secret));
    let secret = match secrets {
        Ok(secret) => secret,
        Err(e) if dev => {
            tracing::warn!("{e}: accepted with --dev only");
            settings.jwt_secret.clone().unwrap_or_default()
        }
        Err(e) => anyhow::bail!("{e}; refusing to start"),
    };
    let public_key = match &settings.jwt_public_key_file {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let auth = Authenticator::new(secret.as_bytes(), public_key.as_deref())?;
    if settings.api_key.is_none() {
        tracing::warn!("no API key set: the server-to-server endpoints will refuse every call");
    }
    let store = switchboard_store::connect(&settings.database_url)
        .await
        .with_context(|| format!("opening the store at {}", settings.database_url))?;
    // The recorder is process-wide: a second App in one process (tests) shares
    // the first one's, and renders its own, empty, handle.
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::debug!("a metrics recorder is installed already");
    }

    // The broker hands its events to the consumers, which need the broker to
    // exist first: they are filled in once, below, before anything subscribes.
    let consumers: Arc<OnceLock<Consumers>> = Arc::default();
    let to_consumers = consumers.clone();
    let (broker, presence): (Arc<dyn Broker>, Arc<dyn Presence>) = switchboard_broker::connect(
        &settings.broker,
        &settings.redis_prefix,
        Arc::new(move |event| {
            if let Some(consumers) = to_consumers.get() {
                consumers.handle(event);
            }
        }),
    )
    .await
    .with_context(|| format!("connecting to the broker at {}", settings.broker))?;
    let hub = Arc::new(Hub::new(broker.clone(), settings.max_streams_per_user));
    let collab = Arc::new(Collab::new(
        store.clone(),
        broker.clone(),
        settings.collab.clone(),
    ));
    let last_published = store
        .max_message_id()
        .await
        .context("reading the last message id")?;
    let engine = EngineConfig {
        ping_interval: settings.ping_interval,
        ping_timeout: settings.ping_timeout,
        max_payload: settings.max_payload,
        ws_write_coalesce: settings.ws_write_coalesce,
        ..EngineConfig::default()
    };
    let mut built = None;
    let app = Arc::new_cyclic(|app| {
        let io = SocketIo::builder()
            .engine_config(engine)
            .io_config(IoConfig {
                recovery: true,
                ..IoConfig::default()
            })
            .namespace("/", realtime::Realtime::new(app.clone()))
            .build();
        #[allow(clippy::expect_used)]
        let namespace = io
            .namespace("/")
            .expect("the namespace \"/\" was registered just above");
        built = Some(io);
        App {
            realtime: realtime::Node {
                namespace,
                writer: Writer::start(app.clone(), last_published),
                limits: MessageLimits {
                    max_chars: settings.max_message_chars,
                },
                typing: Typing::default(),
                connections: ConnectionCounts::default(),
                expiries: Default::default(),
                catch_up: Arc::default(),
            },
            presence,
            dev: dev.then(DevHooks::default),
            notifier: Publisher::new(store.clone(), broker.clone(), hub.clone()),
            hub,
            collab,
            auth,
            store,
            broker,
            metrics,
            settings,
        }
    });
    let io = built.context("the Socket.IO server was not built")?;
    let _ = consumers.set(Consumers {
        rooms: app.realtime.namespace.clone(),
        catch_up: app.realtime.catch_up.clone(),
        users: app.hub.clone(),
        documents: app.collab.clone(),
        access: Arc::downgrade(&app),
    });
    app.broker
        .subscribe(&Topic::Access)
        .await
        .context("subscribing to access changes")?;
    tokio::spawn(presence::housekeeping(
        Arc::downgrade(&app),
        app.settings.presence_ttl / 3,
    ));
    tokio::spawn(presence::typing_housekeeping(Arc::downgrade(&app)));
    tokio::spawn(realtime::expiry::housekeeping(Arc::downgrade(&app)));
    Ok((app, io))
}

pub async fn serve(settings: Settings, dev: bool) -> anyhow::Result<()> {
    let (app, io) = build(settings, dev).await?;
    if dev {
        print_dev_banner(&app)?;
    }
    let router = crate::http::router(app.clone(), &io);
    let listener = TcpListener::bind(&app.settings.bind)
        .await
        .with_context(|| format!("binding {}", app.settings.bind))?;
    tracing::info!(addr = %listener.local_addr()?, store = %app.settings.database_url, "switchboard listening");
    // Graceful: stop accepting, close the Socket.IO connections so their clients
    // reconnect (to another node, behind a load balancer), let requests finish;
    // streams never finish by themselves, so the process exits at the latest
    // `shutdown_timeout` after the signal.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = crate::http::listen::serve(listener, router, async {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => {}
        _ = shutdown_signal() => {
            let _ = stop.send(());
            for socket in app.realtime.namespace.sockets() {
                socket.close_connection();
            }
            let drained = async {
                app.collab.shutdown().await;
                server.await
            };
            if tokio::time::timeout(app.settings.shutdown_timeout, drained).await.is_err() {
                tracing::info!("open connections outlived the shutdown timeout; exiting");
            }
        }
    }
    Ok(())
}

fn print_dev_banner(app: &App) -> anyhow::Result<()> {
    println!("switchboard dev mode: http://{}", app.settings.bind);
    println!(
        "API key: {}",
        app.settings.api_keys().next().unwrap_or_default()
    );
    for (user, name) in crate::http::dev::DEMO_USERS {
        let token =
            crate::http::dev::demo_token(app, user, name).map_err(|e| anyhow::anyhow!(e.0))?;
        let workspaces = crate::http::dev::DEMO_WORKSPACES.join(", ");
        println!("token for {user} (workspaces {workspaces}): {token}");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
