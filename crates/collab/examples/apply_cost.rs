//! What applying an update costs, through `Document` (structs read, runs
//! planned, waiting structs kept outside yrs) and straight into yrs (how
//! `Document::apply` worked before): `cargo run --release -p
//! switchboard-collab --example apply_cost`.
//!
//! Workloads: typing (one character per update, 10 editors taking turns,
//! each having seen the others' edits), a paste of 256 KiB, and typing
//! delivered out of order (each editor's updates in reverse pairs, so half of
//! them wait for the one before).

use std::time::{Duration, Instant};

use switchboard_collab::Document;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Text, Transact, Update};

fn typing(editors: u64, updates: usize) -> Vec<Vec<u8>> {
    let docs: Vec<Doc> = (1..=editors).map(Doc::with_client_id).collect();
    let mut log: Vec<Vec<u8>> = Vec::with_capacity(updates);
    for i in 0..updates {
        let doc = &docs[i % docs.len()];
        let before = doc.transact().state_vector();
        let text = doc.get_or_insert_text("t");
        {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len / 2, "x");
        }
        let update = doc.transact().encode_state_as_update_v1(&before);
        for other in &docs {
            if !std::ptr::eq(other, doc) {
                other
                    .transact_mut()
                    .apply_update(Update::decode_v1(&update).unwrap())
                    .unwrap();
            }
        }
        log.push(update);
    }
    log
}

fn paste(bytes: usize) -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(99);
    let text = doc.get_or_insert_text("t");
    let chunk = "lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1);
    text.insert(&mut doc.transact_mut(), 0, &chunk[..bytes]);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&Default::default());
    vec![update]
}

/// Straight into yrs, as `Document::apply` did before.
fn yrs_direct(log: &[Vec<u8>]) -> Duration {
    let doc = Doc::new();
    let start = Instant::now();
    for update in log {
        let update = Update::decode_v1(update).unwrap();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.transact_mut().apply_update(update)
        }))
        .unwrap()
        .unwrap();
    }
    start.elapsed()
}

fn through_document(log: &[Vec<u8>]) -> Duration {
    let doc = Document::new();
    let start = Instant::now();
    for update in log {
        doc.apply(Document::decode_update(update).unwrap()).unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(doc.waiting_size().0, 0);
    elapsed
}

fn report(name: &str, log: &[Vec<u8>], rounds: usize) {
    let mut before = Duration::MAX;
    let mut after = Duration::MAX;
    for _ in 0..rounds {
        before = before.min(yrs_direct(log));
        after = after.min(through_document(log));
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / log.len() as f64;
    println!(
        "{name:<34} {:>6} updates  yrs direct {:>9.2} us/update  Document {:>9.2} us/update  ({:+.0}%)",
        log.len(),
        per(before),
        per(after),
        (after.as_secs_f64() / before.as_secs_f64() - 1.0) * 100.0
    );
}

fn main() {
    let typed = typing(10, 5_000);
    report("typing, 10 editors", &typed, 5);
    report("paste of 256 KiB", &paste(256 * 1024), 5);
    let mut swapped = typed.clone();
    for pair in swapped.chunks_mut(20) {
        // each editor's two consecutive updates arrive in reverse order
        for i in 0..10.min(pair.len() / 2) {
            pair.swap(i, i + 10);
        }
    }
    // yrs direct is skipped for this one: out of order is the path that
    // reaches the use after free.
    let mut after = Duration::MAX;
    for _ in 0..5 {
        after = after.min(through_document(&swapped));
    }
    println!(
        "{:<34} {:>6} updates  Document {:>9.2} us/update",
        "typing delivered out of order",
        swapped.len(),
        after.as_secs_f64() * 1e6 / swapped.len() as f64
    );
}
