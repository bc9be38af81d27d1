//! In-process presence: entries per workspace with an expiry, for one node.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use switchboard_core::{BrokerError, Presence, PresenceEntry};

/// Connection → (entry, expires_at), for one workspace.
type Entries = HashMap<String, (PresenceEntry, i64)>;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(connection: &str, user: &str) -> PresenceEntry {
        PresenceEntry {
            connection: connection.into(),
            user_id: user.into(),
            name: None,
        }
    }

    #[tokio::test]
    async fn counts_a_user_once_across_connections() {
        let p = MemoryPresence::default();
        assert!(p.join("w", &entry("c1", "alice"), 100, 0).await.unwrap());
        assert!(!p.join("w", &entry("c2", "alice"), 100, 0).await.unwrap());
        assert!(p.join("w", &entry("c3", "bob"), 100, 0).await.unwrap());
        assert_eq!(
            p.users("w", 0).await.unwrap(),
            vec![("alice".into(), None), ("bob".into(), None)]
        );
        assert_eq!(p.leave("w", "c1", 0).await.unwrap(), None);
        assert_eq!(p.leave("w", "c2", 0).await.unwrap(), Some("alice".into()));
        assert_eq!(p.leave("w", "c2", 0).await.unwrap(), None);
    }

    #[tokio::test]
    async fn expires_entries_that_are_not_refreshed() {
        let p = MemoryPresence::default();
        p.join("w", &entry("c1", "alice"), 100, 0).await.unwrap();
        p.join("w", &entry("c2", "alice"), 200, 0).await.unwrap();
        p.join("v", &entry("c3", "bob"), 100, 0).await.unwrap();
        assert_eq!(
            p.expire(150).await.unwrap(),
            vec![("v".into(), "bob".into())]
        );
        assert_eq!(p.users("w", 150).await.unwrap().len(), 1);
        assert_eq!(
            p.expire(250).await.unwrap(),
            vec![("w".into(), "alice".into())]
        );
        assert!(p.users("w", 250).await.unwrap().is_empty());
    }
}
