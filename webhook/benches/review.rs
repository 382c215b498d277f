//! The admission path in process: decode the AdmissionReview, run the patch engine, encode the
//! answer, for the captured JobManager and TaskManager reviews. No TLS, no sockets, no runtime,
//! so the figure moves only with the webhook's own code; `bench-admission` measures the server.
//! Prints µs per review (the best of several batches, the least disturbed by the other core).
//!
//!   cargo bench -p flink-webhook --bench review [-- ITERATIONS]
//!   valgrind --tool=callgrind target/release/deps/review-* 2000   # instructions, repeatable
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use flink_webhook::admission;
use flink_webhook::metrics::Metrics;
use flink_webhook::patch::MutationContext;
use flink_webhook::policy::Policy;

// As the binary runs: the allocator is a large part of this path's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // `cargo bench` passes `--bench`; the first number on the line is the iteration count.
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let policy = Policy::from_yaml(&std::fs::read_to_string(root.join("examples/policy.yaml"))?)?;
    let metrics = Metrics::new();
    let ctx = MutationContext {
        native_sidecar: true,
    };
    println!("| review | µs per review (best batch) | answer bytes |");
    println!("|---|---:|---:|");
    for (label, file) in [
        ("JobManager", "flink-2.3-application-jobmanager.review.json"),
        (
            "TaskManager",
            "flink-2.3-application-taskmanager.review.json",
        ),
    ] {
        let path = root.join("tests/fixtures/admission").join(file);
        let body = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (reply, _) = admission::review(&body, &policy, &ctx, &metrics);
        anyhow::ensure!(reply.status == 200, "{label}: status {}", reply.status);
        let batch = (iterations / 10).max(1);
        let mut best = f64::INFINITY;
        for _ in 0..10 {
            let started = Instant::now();
            for _ in 0..batch {
                black_box(admission::review(black_box(&body), &policy, &ctx, &metrics));
            }
            best = best.min(started.elapsed().as_secs_f64() * 1e6 / batch as f64);
        }
        println!("| {label} | {best:.1} | {} |", reply.body.len());
    }
    Ok(())
}
