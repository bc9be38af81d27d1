//! The conformance suite against the in-process broker (`memory`).

#[macro_use]
mod conformance;

use conformance::Backend;

async fn backend() -> Option<Backend> {
    Some(Backend::memory())
}

conformance_tests!(backend);
