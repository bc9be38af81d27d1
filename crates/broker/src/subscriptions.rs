//! Counted subscriptions, the one structure every broker adapter keeps: a
//! topic is subscribed on the broker while at least one local listener wants
//! it, so only the first `add` and the last `remove` reach the network.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use switchboard_core::Topic;

/// Topic → number of local subscriptions.
#[derive(Default)]
pub(crate) struct Subscriptions {
    counts: Mutex<HashMap<Topic, usize>>,
}

impl Subscriptions {
    fn counts(&self) -> MutexGuard<'_, HashMap<Topic, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more subscription; true if it is the topic's first.
    pub(crate) fn add(&self, topic: &Topic) -> bool {
        let mut counts = self.counts();
        let count = counts.entry(topic.clone()).or_default();
        *count += 1;
        *count == 1
    }

    /// Counts one subscription less; true if it was the topic's last. A topic
    /// without subscriptions stays without (false).
    pub(crate) fn remove(&self, topic: &Topic) -> bool {
        let mut counts = self.counts();
        match counts.get_mut(topic) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                counts.remove(topic);
                true
            }
            None => false,
        }
    }

    /// Whether the topic has at least one subscription.
    pub(crate) fn contains(&self, topic: &Topic) -> bool {
        self.counts().contains_key(topic)
    }

    /// Every topic with at least one subscription, in no particular order.
    pub(crate) fn topics(&self) -> Vec<Topic> {
        self.counts().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_add_and_the_last_remove_count() {
        let subs = Subscriptions::default();
        let a = Topic::Workspace("a".into());
        let b = Topic::User("a".into());
        assert!(!subs.remove(&a), "nothing to remove");
        assert!(subs.add(&a));
        assert!(!subs.add(&a));
        assert!(subs.add(&b));
        assert!(subs.contains(&a));
        assert!(!subs.remove(&a));
        assert!(subs.contains(&a));
        assert!(subs.remove(&a));
        assert!(!subs.contains(&a));
        assert!(!subs.remove(&a), "never below zero");
        assert!(subs.add(&a), "first again");
        let mut topics = subs.topics();
        topics.sort_by_key(Topic::channel);
        assert_eq!(topics, vec![b, a]);
    }
}
