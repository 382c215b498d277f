//! The benchmark corpus: Flink-style log lines in Flink's default layout, about 150 bytes a line
//! on average, with about 10% of the lines inside Java stack traces. Deterministic (same input,
//! same bytes), so anyone can rerun the same comparison against another shipper.

const LOGGERS: [&str; 6] = [
    "org.apache.flink.runtime.checkpoint.CheckpointCoordinator",
    "org.apache.flink.runtime.taskmanager.Task",
    "org.apache.flink.runtime.executiongraph.ExecutionGraph",
    "org.apache.flink.runtime.taskexecutor.TaskExecutor",
    "org.apache.flink.streaming.runtime.tasks.StreamTask",
    "org.apache.kafka.clients.consumer.internals.ConsumerCoordinator",
];

/// A trace record every this many records, each 10 lines long: 9 trace lines per ~100 lines.
const TRACE_EVERY: usize = 91;

/// Appends `lines` lines (whole records only; may overshoot by a trace) and returns the number of
/// log records (= events after multi-line grouping).
pub fn generate(lines: usize, out: &mut String) -> usize {
    generate_timed(lines, out, crate::agent::flink_timestamp)
}

/// [`generate`] with record `i` stamped `timestamp(i)` (Flink's layout), e.g. to place a
/// pod's corpus in the last hours, or to interleave two pods' records.
pub fn generate_timed(
    lines: usize,
    out: &mut String,
    timestamp: impl Fn(usize) -> String,
) -> usize {
    let mut written = 0usize;
    let mut records = 0usize;
    // A small LCG keeps message lengths varied without a dependency.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize
    };
    while written < lines {
        let i = records;
        let ts = timestamp(i);
        let logger = LOGGERS[i % LOGGERS.len()];
        if i % TRACE_EVERY == TRACE_EVERY - 1 {
            out.push_str(&format!(
                "{ts} WARN  {logger:<60} [] - Source: kafka-source (1/4)#0 switched from RUNNING to FAILED with failure cause:\n"
            ));
            out.push_str(&format!(
                "java.lang.IllegalStateException: record {i} could not be deserialized\n"
            ));
            for f in 0..6 {
                out.push_str(&format!(
                    "\tat org.apache.flink.streaming.runtime.tasks.StreamTask.processInput{f}(StreamTask.java:{})\n",
                    500 + f * 7
                ));
            }
            out.push_str("Caused by: java.io.EOFException: end of stream\n");
            out.push_str("\t... 12 more\n");
            written += 10;
        } else {
            let pad = 6 + next() % 40;
            out.push_str(&format!(
                "{ts} INFO  {logger:<60} [] - record {i}: checkpoint {} done {}\n",
                i / 10,
                "x".repeat(pad)
            ));
            written += 1;
        }
        records += 1;
    }
    records
}
