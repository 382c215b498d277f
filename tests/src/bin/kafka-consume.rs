//! Prints the values of a topic's messages, one per line, reading partition 0.. by assignment
//! (tansu's consumer groups are unreliable). Used by the demo.
//!
//! Usage: kafka-consume BROKERS TOPIC MIN_MESSAGES TIMEOUT_SECONDS

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: kafka-consume BROKERS TOPIC MIN_MESSAGES TIMEOUT_SECONDS";
    let brokers = args.next().context(usage)?;
    let topic = args.next().context(usage)?;
    let min: usize = args.next().context(usage)?.parse()?;
    let timeout = Duration::from_secs(args.next().context(usage)?.parse()?);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "flink-injector-demo")
        .set("enable.auto.commit", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    // The topic may not exist until the agent's first message: wait for its metadata.
    let partitions = loop {
        if let Ok(md) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(2)) {
            if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                if !t.partitions().is_empty() {
                    break t.partitions().len();
                }
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("topic {topic} never appeared on {brokers}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = 0usize;
    while seen < min && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(msg)) => {
                seen += 1;
                println!(
                    "{}",
                    String::from_utf8_lossy(msg.payload().unwrap_or_default())
                );
            }
            Some(Err(e)) => eprintln!("kafka-consume: {e}"),
            None => {}
        }
    }
    if seen < min {
        anyhow::bail!("only {seen} of {min} messages arrived within {timeout:?}");
    }
    Ok(())
}
