//! A shared timer for many deadlines that all share one delay.
//!
//! Heartbeats and connect timeouts use the same delay for every connection, so
//! deadlines are scheduled in the order they fall due: a plain FIFO queue and one
//! task per timer replace a timer (or a task) per connection. Each entry costs a few
//! dozen bytes; a stale entry (its connection answered in time) is skipped when it
//! comes up. What to do when a deadline passes is the caller's closure.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

type Fire<T> = Box<dyn Fn(T, Instant) + Send + Sync>;

pub(crate) struct FifoTimer<T> {
    shared: Arc<Shared<T>>,
    task: OnceLock<AbortHandle>,
}

struct Shared<T> {
    queue: Mutex<VecDeque<(Instant, T)>>,
    wake: Notify,
    fire: Fire<T>,
}

impl<T: Send + 'static> FifoTimer<T> {
    pub(crate) fn new(fire: impl Fn(T, Instant) + Send + Sync + 'static) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                fire: Box::new(fire),
            }),
            task: OnceLock::new(),
        }
    }

    /// Calls the fire closure with `item` at `at`. Deadlines are expected to come in
    /// (roughly) increasing order; an earlier one is still placed correctly.
    pub(crate) fn schedule(&self, at: Instant, item: T) {
        self.task
            .get_or_init(|| tokio::spawn(run(self.shared.clone())).abort_handle());
        let wake = {
            let mut queue = lock(&self.shared.queue);
            let pos = queue
                .iter()
                .rposition(|(t, _)| *t <= at)
                .map_or(0, |i| i + 1);
            queue.insert(pos, (at, item));
            pos == 0
        };
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

impl<T> Drop for FifoTimer<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

async fn run<T>(shared: Arc<Shared<T>>) {
    let mut due = Vec::new();
    loop {
        let now = Instant::now();
        let next = {
            let mut queue = lock(&shared.queue);
            while queue.front().is_some_and(|(t, _)| *t <= now) {
                due.extend(queue.pop_front());
            }
            queue.front().map(|(t, _)| *t)
        };
        for (at, item) in due.drain(..) {
            (shared.fire)(item, at);
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Locks a mutex, ignoring poisoning: the data guarded here stays consistent
/// even if a holder panicked, because every critical section is a single update.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_in_deadline_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let timer = FifoTimer::new(move |n: u32, _| {
            let _ = tx.send(n);
        });
        let start = Instant::now();
        timer.schedule(start + Duration::from_millis(20), 2);
        timer.schedule(start + Duration::from_millis(10), 1);
        timer.schedule(start + Duration::from_millis(30), 3);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, vec![1, 2, 3]);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
