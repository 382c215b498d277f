//! `flink-logs` against bad input: an unknown topic, cluster-id or pod, a broker that is down
//! (at start or while following), messages of other producers in the topic, batches in every
//! compression the agent can write, and Kafka security settings taken as the agent takes them.
//! Each ends in a clear message and exit status, never a hang, and loses no event.

use std::io::Write;
use std::time::Duration;

use anyhow::{ensure, Result};
use flink_agent::config::PodMeta;
use flink_agent::encode::{encode, Origin};
use flink_agent::parse::parse;
use flink_agent::zone::Zone;
use flink_injector_tests::agent::{flink_record_at, start_agent_as, AgentProc, PodIdentity};
use flink_injector_tests::broker::{create_topic_with, Broker};
use flink_injector_tests::free_port;
use flink_injector_tests::logs::{flink_logs, flink_time, now_ms, wait_shipped, Follower};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

fn scene(topic: &str) -> Result<(tempfile::TempDir, Broker)> {
    let work = tempfile::tempdir()?;
    let broker = Broker::start(work.path())?;
    create_topic_with(&broker.bootstrap(), topic, 2)?;
    Ok((work, broker))
}

fn records(tag: &str, n: usize) -> String {
    (0..n)
        .map(|i| flink_record_at(tag, i, &flink_time(now_ms(), 0)))
        .collect()
}

/// An agent of `pod` that has shipped `text` as its log file.
fn ship(
    work: &std::path::Path,
    bs: &str,
    topic: &str,
    pod: &PodIdentity,
    text: &str,
) -> Result<AgentProc> {
    let dir = work.join(&pod.pod);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("flink.log"), text)?;
    let agent = start_agent_as(pod, &dir, work, bs, topic, &[])?;
    wait_shipped(&agent, text.lines().count())?;
    Ok(agent)
}

/// Counts delivery failures of a bare producer.
#[derive(Default)]
struct Deliveries(std::sync::Mutex<Vec<String>>);
impl rdkafka::ClientContext for Deliveries {}
impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            if let Ok(mut f) = self.0.lock() {
                f.push(e.to_string());
            }
        }
    }
}

/// Sends `messages` (key, payload) with a bare producer compressing its batches with `codec`;
/// every one must be acknowledged.
fn produce(
    bs: &str,
    topic: &str,
    codec: &str,
    messages: &[(Option<String>, Vec<u8>)],
) -> Result<()> {
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("compression.type", codec)
        .set("linger.ms", "50")
        .create_with_context(Deliveries::default())?;
    for (key, payload) in messages {
        let mut record = BaseRecord::<String, Vec<u8>>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        producer
            .send(record)
            .map_err(|(e, _)| anyhow::anyhow!("queueing a message: {e}"))?;
    }
    producer.flush(Duration::from_secs(30))?;
    let failed = producer
        .context()
        .0
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    ensure!(
        failed.is_empty(),
        "{codec}: {} not delivered: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    Ok(())
}

#[test]
fn unknown_topic_cluster_id_or_pod_are_clear_errors() -> Result<()> {
    let topic = "logs-known";
    let (work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let pod = PodIdentity::new("wc-taskmanager-1-1", "wc", "taskmanager", "UTC");
    let _agent = ship(work.path(), &bs, topic, &pod, &records("known", 20))?;

    let run = flink_logs(&bs, "logs-typo", &["-c", "wc"])?;
    run.expect_code(3)?;
    ensure!(
        run.stderr.contains(r#"topic "logs-typo" does not exist"#) && run.stderr.contains(topic),
        "{}",
        run.stderr
    );

    let run = flink_logs(&bs, topic, &["-c", "wordcount", "--since", "1h"])?;
    run.expect_code(4)?;
    ensure!(
        run.stderr
            .contains(r#"no events of cluster-id "wordcount""#)
            && run.stderr.contains("cluster-ids seen there: wc"),
        "{}",
        run.stderr
    );
    ensure!(run.stdout.is_empty());

    let run = flink_logs(&bs, topic, &["-c", "wc", "-p", "wc-taskmanager-9-9"])?;
    run.expect_code(4)?;
    ensure!(
        run.stderr
            .contains("its pods seen there: wc-taskmanager-1-1"),
        "{}",
        run.stderr
    );

    let run = flink_logs(&bs, topic, &["-c", "wc", "--since", "yesterday"])?;
    run.expect_code(2)?;
    ensure!(run.stderr.contains("--since"), "{}", run.stderr);

    // The same cluster-id with a window that holds nothing of it: nothing there, status 4.
    let run = flink_logs(
        &bs,
        topic,
        &[
            "-c",
            "wc",
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-01-02T00:00:00Z",
        ],
    )?;
    run.expect_code(4)?;
    Ok(())
}

/// No broker where it is told to look: an error after --timeout, naming the address.
#[test]
fn a_broker_that_is_down_is_an_error_after_the_deadline() -> Result<()> {
    let bs = format!("127.0.0.1:{}", free_port()?);
    let run = flink_logs(&bs, "flink-logs", &["-c", "wc", "--timeout", "3s"])?;
    run.expect_code(1)?;
    ensure!(
        run.stderr
            .contains(&format!("Kafka at {bs} did not answer within 3s")),
        "{}",
        run.stderr
    );
    Ok(())
}

/// The broker goes away while following: the follower says so and exits, after its deadline.
#[test]
fn a_broker_lost_while_following_ends_it_with_an_error() -> Result<()> {
    let topic = "logs-lost";
    let (work, mut broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let pod = PodIdentity::new("lost-taskmanager-1-1", "lost", "taskmanager", "UTC");
    let agent = ship(work.path(), &bs, topic, &pod, &records("lost", 5))?;
    let mut follower =
        Follower::start(&bs, topic, &["-c", "lost", "--timeout", "3s"], work.path())?;
    follower.wait_line("rec lost:4 ", Duration::from_secs(60))?;
    agent.guard.signal(9)?;
    broker.stop();
    let (code, stderr) = follower.wait_exit(Duration::from_secs(60))?;
    ensure!(code == Some(1), "exit {code:?}: {stderr}");
    ensure!(stderr.contains("did not answer within 3s"), "{stderr}");
    Ok(())
}

/// Other producers share the topic: their messages (not JSON, other JSON, almost the
/// agent's) are skipped and counted, and the agent's events all come out.
#[test]
fn messages_that_are_not_the_agents_are_skipped_and_counted() -> Result<()> {
    let topic = "logs-foreign";
    let (work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let pod = PodIdentity::new("mix-taskmanager-1-1", "mix", "taskmanager", "UTC");
    let first = records("before", 30);
    let agent = ship(work.path(), &bs, topic, &pod, &first)?;
    let key = Some(pod.pod.clone());
    let foreign: Vec<(Option<String>, Vec<u8>)> = vec![
        (key.clone(), b"plain text from a Java app".to_vec()),
        (None, b"\xff\xfe\x00binary".to_vec()),
        (key.clone(), br#"[1,2,3]"#.to_vec()),
        (
            key.clone(),
            br#"{"@timestamp":"2026-12-06T00:00:00Z","message":"filebeat?"}"#.to_vec(),
        ),
        (key.clone(), br#"{"@timestamp":"not json at all}}"#.to_vec()),
        (key.clone(), Vec::new()),
    ];
    produce(&bs, topic, "none", &foreign)?;
    let second = records("after", 30);
    let path = work.path().join(&pod.pod).join("flink.log");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)?
        .write_all(second.as_bytes())?;
    wait_shipped(&agent, (first.clone() + &second).lines().count())?;

    let run = flink_logs(&bs, topic, &["-c", "mix", "-p", &pod.pod])?;
    run.expect_code(0)?;
    ensure!(
        run.stdout == first + &second,
        "the agent's events, all and only"
    );
    ensure!(run.not_agent()? == foreign.len() as u64, "{}", run.stderr);
    Ok(())
}

/// The agent compresses with lz4; a user may set gzip or snappy (or none) in the policy.
/// Batches of each are read. (zstd: neither the agent nor the reader is built with it.)
#[test]
fn batches_in_every_compression_the_agent_can_write() -> Result<()> {
    let topic = "logs-codecs";
    let (_work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let codecs = ["none", "gzip", "snappy", "lz4"];
    let n = 300;
    let mut want = String::new();
    for codec in codecs {
        let meta = PodMeta {
            pod_name: format!("codec-taskmanager-{codec}"),
            cluster_id: "codec".into(),
            component: "taskmanager".into(),
            ..PodMeta::default()
        };
        let mut offset = 0u64;
        let mut messages = Vec::new();
        for i in 0..n {
            let text = flink_record_at(codec, i, &flink_time(now_ms(), 0));
            let event = text.strip_suffix('\n').unwrap_or(&text);
            let origin = Origin {
                path: "/opt/flink/log/flink.log",
                offset,
                dev: 1,
                ino: 2,
                fingerprint: 3,
            };
            offset += text.len() as u64;
            let payload = encode(&parse(event, &Zone::UTC), &origin, &meta, "unused");
            messages.push((Some(meta.pod_name.clone()), payload));
            if codec == "lz4" {
                want.push_str(&text);
            }
        }
        produce(&bs, topic, codec, &messages)?;
    }
    let run = flink_logs(&bs, topic, &["-c", "codec", "-o", "json"])?;
    run.expect_code(0)?;
    ensure!(
        run.printed()? == (n * codecs.len()) as u64,
        "{}",
        run.stderr
    );
    ensure!(run.not_agent()? == 0, "{}", run.stderr);
    let run = flink_logs(&bs, topic, &["-c", "codec", "-p", "codec-taskmanager-lz4"])?;
    run.expect_code(0)?;
    ensure!(run.stdout == want, "lz4 batches read back as written");
    Ok(())
}

/// Kafka settings as the agent takes them: a secret directory of librdkafka properties
/// (here SASL, which this broker does not speak: a clear error after the deadline, and the
/// password never shown), and --kafka-property winning over it.
#[test]
fn kafka_security_settings_are_taken_as_the_agent_takes_them() -> Result<()> {
    let topic = "logs-sasl";
    let (work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let pod = PodIdentity::new("sasl-taskmanager-1-1", "sasl", "taskmanager", "UTC");
    let text = records("sasl", 10);
    let _agent = ship(work.path(), &bs, topic, &pod, &text)?;
    let secret = work.path().join("kafka-secret");
    std::fs::create_dir(&secret)?;
    for (k, v) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", "flink"),
        ("sasl.password", "not-a-secret\n"),
    ] {
        std::fs::write(secret.join(k), v)?;
    }
    let dir = secret.to_string_lossy().to_string();
    let run = flink_logs(
        &bs,
        topic,
        &["-c", "sasl", "--kafka-secret-dir", &dir, "--timeout", "3s"],
    )?;
    run.expect_code(1)?;
    ensure!(
        run.stderr.contains("did not answer within 3s"),
        "{}",
        run.stderr
    );
    ensure!(!run.stderr.contains("not-a-secret"), "{}", run.stderr);

    let run = flink_logs(
        &bs,
        topic,
        &[
            "-c",
            "sasl",
            "--kafka-secret-dir",
            &dir,
            "--kafka-property",
            "security.protocol=PLAINTEXT",
            "-p",
            &pod.pod,
        ],
    )?;
    run.expect_code(0)?;
    ensure!(run.stdout == text, "{}", run.stderr);
    Ok(())
}
