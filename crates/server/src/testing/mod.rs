//! In-process test support (compiled for tests only): a whole node, with the
//! in-process broker and a SQLite file in a temporary folder, served on a
//! loopback port, and a raw Socket.IO client over HTTP long-polling.
//!
//! The client is written against the wire protocol on purpose: a test can stop
//! reading (a stalled reader) and see exactly which frames arrive in which
//! order. The end-to-end tests in `tests/e2e` use the stock npm clients.

mod polling;

use std::path::PathBuf;
use std::sync::Arc;

use switchboard_socketio::{Namespace, Socket};
use tokio::net::TcpListener;

pub use polling::PollingClient;

use crate::app::App;
use crate::config::{SettingArgs, Settings};

/// The secret of the test tokens.
pub const SECRET: &str = "in-process-test-secret-0123456789";

/// A node serving on a loopback port until dropped.
pub struct TestNode {
    pub app: Arc<App>,
    pub addr: std::net::SocketAddr,
    folder: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestNode {
    /// Starts a node on the defaults, changed by `configure`.
    pub async fn start(configure: impl FnOnce(&mut Settings)) -> Self {
        let folder = std::env::temp_dir().join(format!(
            "switchboard-test-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&folder).expect("temp folder");
        let mut settings = Settings::load(&SettingArgs::default()).expect("default settings");
        settings.jwt_secret = Some(SECRET.to_owned());
        settings.api_key = Some("in-process-test-api-key".to_owned());
        settings.database_url = format!("sqlite://{}", folder.join("test.db").display());
        settings.bind = "127.0.0.1:0".to_owned();
        configure(&mut settings);
        let (app, io) = crate::app::build(settings, false).await.expect("app");
        let router = crate::http::router(app.clone(), &io);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::http::listen::serve(listener, router, async {
            let _ = stopped.await;
        }));
        Self {
            app,
            addr,
            folder,
            stop: Some(stop),
        }
    }

    /// A token for `user` granting `workspaces`, valid for an hour.
    pub fn token(&self, user: &str, workspaces: &[&str]) -> String {
        let workspaces: Vec<String> = workspaces.iter().map(|w| (*w).to_owned()).collect();
        self.app
            .auth
            .mint(user, None, &workspaces, 3600)
            .expect("token")
    }

    /// A connected client of `user`, with access to `workspaces`.
    pub async fn client(&self, user: &str, workspaces: &[&str]) -> PollingClient {
        PollingClient::connect(self.addr, &self.token(user, workspaces)).await
    }

    /// The main namespace.
    pub fn namespace(&self) -> Namespace {
        self.app.realtime.namespace.clone()
    }

    /// The server side of a client.
    pub fn socket(&self, client: &PollingClient) -> Socket {
        self.namespace()
            .sockets()
            .into_iter()
            .find(|s| s.id().as_str() == client.sid())
            .expect("the client's socket")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn unique() -> u64 {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).expect("random bytes");
    u64::from_le_bytes(raw)
}
