//! In-process presence: entries per workspace with an expiry, for one node.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use switchboard_core::{BrokerError, Presence, PresenceEntry};

/// Connection → (entry, expires_at), for one workspace.
type Entries = HashMap<String, (PresenceEntry, i64)>;

/// Presence of a single node, kept in memory.
#[derive(Default)]
pub struct MemoryPresence {
    /// Workspace → its entries.
    workspaces: Mutex<HashMap<String, Entries>>,
}

fn user_present(entries: &Entries, user: &str, now: i64) -> bool {
    entries
        .values()
        .any(|(e, expires)| e.user_id == user && *expires > now)
}

impl MemoryPresence {
    fn workspaces(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entries>> {
        self.workspaces.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn join(
        &self,
        workspace: &str,
        entry: &PresenceEntry,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, BrokerError> {
        let mut workspaces = self.workspaces();
        let entries = workspaces.entry(workspace.to_owned()).or_default();
        let was_present = user_present(entries, &entry.user_id, now);
        entries.insert(entry.connection.clone(), (entry.clone(), expires_at));
        Ok(!was_present)
    }

    async fn leave(
        &self,
        workspace: &str,
        connection: &str,
        now: i64,
    ) -> Result<Option<String>, BrokerError> {
        let mut workspaces = self.workspaces();
        let Some(entries) = workspaces.get_mut(workspace) else {
            return Ok(None);
        };
        let Some((entry, expires)) = entries.remove(connection) else {
            return Ok(None);
        };
        let gone = expires > now && !user_present(entries, &entry.user_id, now);
        if entries.is_empty() {
            workspaces.remove(workspace);
        }
        Ok(gone.then_some(entry.user_id))
    }

    async fn users(
        &self,
        workspace: &str,
        now: i64,
    ) -> Result<Vec<(String, Option<String>)>, BrokerError> {
        let workspaces = self.workspaces();
        let mut users: Vec<(String, Option<String>)> = workspaces
            .get(workspace)
            .into_iter()
            .flat_map(|entries| entries.values())
            .filter(|(_, expires)| *expires > now)
            .map(|(e, _)| (e.user_id.clone(), e.name.clone()))
            .collect();
        users.sort();
        users.dedup_by(|a, b| a.0 == b.0);
        Ok(users)
    }

    async fn expire(&self, now: i64) -> Result<Vec<(String, String)>, BrokerError> {
        let mut gone = Vec::new();
        let mut workspaces = self.workspaces();
        for (workspace, entries) in workspaces.iter_mut() {
            let expired: Vec<String> = entries
                .iter()
                .filter(|(_, (_, expires))| *expires <= now)
                .map(|(connection, _)| connection.clone())
                .collect();
            for connection in expired {
                if let Some((entry, _)) = entries.remove(&connection) {
                    if !user_present(entries, &entry.user_id, now)
                        && !gone.contains(&(workspace.clone(), entry.user_id.clone()))
                    {
                        gone.push((workspace.clone(), entry.user_id));
                    }
                }
            }
        }
        workspaces.retain(|_, entries| !entries.is_empty());
        Ok(gone)
    }
}
