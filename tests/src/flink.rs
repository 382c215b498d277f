//! A real local Flink cluster (JobManager + one TaskManager) for end-to-end tests, started from
//! the distribution in `.tools/flink` (see `scripts/install-test-deps.sh`).
//!
//! Each cluster is private: its own config dir (a copy of the distribution's, with free ports on
//! 127.0.0.1 only), pid dir and temp dirs, so tests and other engineers' tests can run clusters in
//! parallel. Both processes run in the foreground, the way Flink's native Kubernetes entrypoint
//! runs them (`flink-console.sh`, log4j-console.properties: the log file in `FLINK_LOG_DIR` plus
//! the console), as children that are killed when the [`LocalFlink`] is dropped.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::{free_port, tool, wait_for, ChildGuard};

/// How long a JobManager or TaskManager may take to come up on a busy 2-core machine (seen: over
/// 2 minutes while other test suites and builds ran).
const START_TIMEOUT: Duration = Duration::from_secs(240);

/// The `kubernetes.cluster-id` every local cluster is configured with: the `--cluster-id` the
/// tests give the agent (`crate::agent::start_agent`), so that the agent reads it.
pub const CLUSTER_ID: &str = "test-cluster";

pub struct LocalFlink {
    home: PathBuf,
    /// Config, pid, tmp and stdout files of this cluster; removed on drop.
    work: tempfile::TempDir,
    conf_dir: PathBuf,
    log_dir: PathBuf,
    rest_port: u16,
    jobmanager: Option<ChildGuard>,
    /// TaskManager children, in start order (named `taskmanager`, `taskmanager-1`, ...).
    taskmanagers: Vec<ChildGuard>,
}

/// Distinct free ports (two calls of `free_port` may return the same port once it is released).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut seen = HashSet::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let p = free_port()?;
        if seen.insert(p) {
            ports.push(p);
        }
    }
    Ok(ports)
}

impl LocalFlink {
    /// Starts a JobManager and a TaskManager writing their logs to `log_dir`, and waits until the
    /// REST API answers and the TaskManager has registered.
    pub fn start(log_dir: &Path) -> Result<Self> {
        Self::start_with(log_dir, &[])
    }

    /// Like [`LocalFlink::start`], with extra `config.yaml` entries (flat keys, e.g.
    /// `("metrics.fetcher.update-interval", "1000")`) that override the defaults below.
    pub fn start_with(log_dir: &Path, extra_conf: &[(&str, &str)]) -> Result<Self> {
        Self::start_cluster(log_dir, extra_conf, 1)
    }

    /// Like [`LocalFlink::start_with`], with `taskmanagers` TaskManagers (each with its own
    /// random RPC and data ports when there are several).
    pub fn start_cluster(
        log_dir: &Path,
        extra_conf: &[(&str, &str)],
        taskmanagers: usize,
    ) -> Result<Self> {
        let home = tool("flink")?;
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating log dir {}", log_dir.display()))?;
        let work = tempfile::Builder::new()
            .prefix("local-flink-")
            .tempdir()
            .context("creating Flink's work dir")?;
        let conf_dir = work.path().join("conf");
        copy_dir(&home.join("conf"), &conf_dir)?;

        // The distribution's JVM options (--add-opens for Java 17) are kept; everything else is
        // written as flat keys, which Flink 2's config.yaml accepts.
        let original: serde_norway::Value = serde_norway::from_str(
            &std::fs::read_to_string(home.join("conf/config.yaml"))
                .context("reading the distribution's config.yaml")?,
        )
        .context("parsing the distribution's config.yaml")?;
        let java_opts = original["env"]["java"]["opts"]["all"]
            .as_str()
            .unwrap_or_default()
            .to_string();

        let ports = free_ports(5)?;
        let (rest_port, jm_rpc, blob) = (ports[0], ports[1], ports[4]);
        // Several TaskManagers on one host cannot share ports: 0 is a random one each.
        let (tm_rpc, tm_data) = match taskmanagers {
            0 | 1 => (ports[2].to_string(), ports[3].to_string()),
            _ => ("0".to_string(), "0".to_string()),
        };
        let dir = |name: &str| -> Result<String> {
            let p = work.path().join(name);
            std::fs::create_dir_all(&p)?;
            Ok(p.display().to_string())
        };
        let mut conf: Vec<(String, String)> = vec![
            // As in native Kubernetes mode, where the agent checks it against its own.
            ("kubernetes.cluster-id", CLUSTER_ID.into()),
            ("env.java.opts.all", java_opts),
            ("env.pid.dir", dir("pid")?),
            ("io.tmp.dirs", dir("tmp")?),
            ("web.tmpdir", dir("web")?),
            ("blob.storage.directory", dir("blob")?),
            ("jobmanager.rpc.address", "127.0.0.1".into()),
            ("jobmanager.rpc.port", jm_rpc.to_string()),
            ("jobmanager.bind-host", "127.0.0.1".into()),
            ("jobmanager.memory.process.size", "1024m".into()),
            ("taskmanager.host", "127.0.0.1".into()),
            ("taskmanager.bind-host", "127.0.0.1".into()),
            ("taskmanager.rpc.port", tm_rpc),
            ("taskmanager.data.port", tm_data),
            ("taskmanager.numberOfTaskSlots", "4".into()),
            ("taskmanager.memory.process.size", "1280m".into()),
            ("taskmanager.memory.managed.fraction", "0.1".into()),
            ("blob.server.port", blob.to_string()),
            ("rest.address", "127.0.0.1".into()),
            ("rest.bind-address", "127.0.0.1".into()),
            ("rest.port", rest_port.to_string()),
            ("parallelism.default", "1".into()),
            // Checkpoints, so the jobs have checkpoint metrics.
            ("execution.checkpointing.interval", "5s".into()),
            // A job that fails keeps restarting (numRestarts grows) instead of failing for good.
            ("restart-strategy.type", "fixed-delay".into()),
            ("restart-strategy.fixed-delay.attempts", "100000".into()),
            ("restart-strategy.fixed-delay.delay", "2s".into()),
            // Metrics over REST refresh every 10 s by default: faster in tests.
            ("metrics.fetcher.update-interval", "2000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra_conf {
            conf.retain(|(ck, _)| ck != k);
            conf.push((k.to_string(), v.to_string()));
        }
        let yaml: String = conf
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", yaml_quote(v)))
            .collect();
        std::fs::write(conf_dir.join("config.yaml"), yaml).context("writing config.yaml")?;

        // What extra_conf says wins; `rest.port: 0` (a random port, as with
        // kubernetes.hostnetwork.enabled) is learned from the JobManager's log once it is up.
        let rest_port = match conf.iter().find(|(k, _)| k == "rest.port") {
            Some((_, v)) => v.parse().context("rest.port")?,
            None => rest_port,
        };
        let mut flink = Self {
            home,
            conf_dir,
            log_dir: log_dir.to_path_buf(),
            rest_port,
            jobmanager: None,
            taskmanagers: Vec::new(),
            work,
        };
        flink.jobmanager = Some(flink.spawn_daemon("jobmanager.sh", "jobmanager")?);
        for i in 0..taskmanagers.max(1) {
            let tm = flink.spawn_daemon("taskmanager.sh", &taskmanager_name(i))?;
            flink.taskmanagers.push(tm);
        }
        flink.wait_ready()?;
        Ok(flink)
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(self.home.join("bin").join(script));
        cmd.env("FLINK_HOME", &self.home)
            .env("FLINK_CONF_DIR", &self.conf_dir)
            .env("FLINK_LOG_DIR", &self.log_dir)
            .env("FLINK_PID_DIR", self.work.path().join("pid"))
            // Whatever the caller's environment says, this cluster uses its own config.
            .env_remove("FLINK_ENV_JAVA_OPTS")
            .env_remove("HADOOP_CLASSPATH")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn_daemon(&mut self, script: &str, name: &str) -> Result<ChildGuard> {
        let out = std::fs::File::create(self.work.path().join(format!("{name}.stdout")))?;
        let err = std::fs::File::create(self.work.path().join(format!("{name}.stderr")))?;
        let mut cmd = self.command(script);
        // `start-foreground` execs the JVM: the child is the JVM, so killing it stops Flink.
        cmd.arg("start-foreground").stdout(out).stderr(err);
        ChildGuard::spawn(name, &mut cmd)
    }

    fn wait_ready(&mut self) -> Result<()> {
        wait_for("Flink REST API and a TaskManager", START_TIMEOUT, || {
            let mut dead = self
                .jobmanager
                .as_mut()
                .is_some_and(|jm| !jm.is_running())
                .then(|| "jobmanager".to_string());
            for (i, tm) in self.taskmanagers.iter_mut().enumerate() {
                if dead.is_none() && !tm.is_running() {
                    dead = Some(taskmanager_name(i));
                }
            }
            if let Some(name) = dead {
                bail!(
                    "{name} exited during start-up; its output:\n{}",
                    self.stdio_tail(&name)
                );
            }
            if self.rest_port == 0 {
                match self.announced_rest_port()? {
                    Some(port) => self.rest_port = port,
                    None => return Ok(None),
                }
            }
            let overview = self.rest_get("/overview")?;
            let wanted = self.taskmanagers.len().max(1) as u64;
            Ok((overview["taskmanagers"].as_u64().unwrap_or(0) >= wanted).then_some(()))
        })
        .with_context(|| {
            format!(
                "logs in {}; JobManager output:\n{}\nTaskManager output:\n{}",
                self.log_dir.display(),
                self.stdio_tail("jobmanager"),
                self.stdio_tail("taskmanager")
            )
        })
    }

    /// The port in the JobManager's `Rest endpoint listening at <host>:<port>`, once written.
    fn announced_rest_port(&self) -> Result<Option<u16>> {
        for f in log_files(&self.log_dir)? {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let port = text
                .lines()
                .filter_map(|l| l.split_once("Rest endpoint listening at "))
                .filter_map(|(_, addr)| addr.trim().rsplit_once(':'))
                .find_map(|(_, port)| port.parse().ok());
            if port.is_some() {
                return Ok(port);
            }
        }
        Ok(None)
    }

    fn stdio_tail(&self, name: &str) -> String {
        let mut s = String::new();
        for ext in ["stdout", "stderr"] {
            let text = std::fs::read_to_string(self.work.path().join(format!("{name}.{ext}")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            s.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
        }
        s
    }

    /// `http://127.0.0.1:<rest port>`.
    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    pub fn rest_port(&self) -> u16 {
        self.rest_port
    }

    /// Where the JobManager and TaskManager write their log files
    /// (`flink-<user>-standalonesession-0-<host>.log`, `flink-<user>-taskexecutor-0-<host>.log`).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// This cluster's `FLINK_CONF_DIR`.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// `GET <rest_url><path>` as JSON; an HTTP error status is an error.
    pub fn rest_get(&self, path: &str) -> Result<Value> {
        let (status, body) = http_get(self.rest_port, path)?;
        if !(200..300).contains(&status) {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    /// The ids of the registered TaskManagers.
    pub fn taskmanager_ids(&self) -> Result<Vec<String>> {
        let tms = self.rest_get("/taskmanagers")?;
        Ok(tms["taskmanagers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Submits a streaming job named `name` that never ends: a throttled number source
    /// (~100 records/s) -> keyBy -> map -> discarding sink, two vertices, so the second one has
    /// records in. Returns the job id once it is submitted.
    pub fn submit_streaming_job(&self, name: &str) -> Result<String> {
        self.submit_job("healthy", name)
    }

    /// Submits a streaming job named `name` that throws an `IllegalStateException` after 20
    /// records, so it fails at run time and keeps restarting (`numRestarts` grows, the
    /// JobManager logs the stack trace). Returns the job id once it is submitted.
    pub fn submit_failing_job(&self, name: &str) -> Result<String> {
        self.submit_job("failing", name)
    }

    /// `bin/flink run -d` of the test job (see [`JOB_SOURCE`]) in `mode` (`healthy`|`failing`|
    /// `wide`: 20 vertices with long names x 4 subtasks, or the parallelism given after the name;
    /// needs that many slots).
    ///
    /// The PyPI distribution has no example jars and no SQL gateway jar (so `sql-client.sh`
    /// cannot run), hence a tiny DataStream job compiled here with the JDK's javac against
    /// Flink's own lib/.
    pub fn submit_job(&self, mode: &str, name: &str) -> Result<String> {
        self.submit_job_with(mode, name, &[])
    }

    /// [`LocalFlink::submit_job`] with more arguments for the job (`wide`: its parallelism).
    pub fn submit_job_with(&self, mode: &str, name: &str, args: &[&str]) -> Result<String> {
        let jar = self.job_jar()?;
        let out = self
            .command("flink")
            .args(["run", "-d", "-c", "FlinkInjectorE2eJob"])
            .arg(&jar)
            .args([mode, name])
            .args(args)
            .output()
            .context("running bin/flink run")?;
        if !out.status.success() {
            bail!(
                "bin/flink run failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        wait_for(
            &format!("job {name} to be submitted"),
            START_TIMEOUT,
            || Ok(self.job_by_name(name)?.map(|(id, _)| id)),
        )
    }

    /// Compiles the test job once per cluster.
    fn job_jar(&self) -> Result<PathBuf> {
        let dir = self.work.path().join("job");
        let jar = dir.join("flink-injector-e2e-job.jar");
        if jar.exists() {
            return Ok(jar);
        }
        let classes = dir.join("classes");
        std::fs::create_dir_all(&classes)?;
        let src = dir.join("FlinkInjectorE2eJob.java");
        std::fs::write(&src, JOB_SOURCE)?;
        let classpath = format!("{}/lib/*", self.home.display());
        let javac = Command::new("javac")
            .args(["-nowarn", "-cp", &classpath, "-d"])
            .arg(&classes)
            .arg(&src)
            .output()
            .context("running javac (a JDK 17 is needed for the real-Flink tests)")?;
        if !javac.status.success() {
            bail!("javac failed:\n{}", String::from_utf8_lossy(&javac.stderr));
        }
        let status = Command::new("jar")
            .arg("cf")
            .arg(&jar)
            .arg("-C")
            .arg(&classes)
            .arg(".")
            .status()
            .context("running jar")?;
        if !status.success() {
            bail!("jar cf failed: {status}");
        }
        Ok(jar)
    }

    /// The id and state of the most recent job named `name`.
    pub fn job_by_name(&self, name: &str) -> Result<Option<(String, String)>> {
        let overview = self.rest_get("/jobs/overview")?;
        let mut jobs: Vec<&Value> = overview["jobs"]
            .as_array()
            .map(|a| a.iter().filter(|j| j["name"] == name).collect())
            .unwrap_or_default();
        jobs.sort_by_key(|j| j["start-time"].as_i64().unwrap_or(0));
        Ok(jobs.last().and_then(|j| {
            Some((
                j["jid"].as_str()?.to_string(),
                j["state"].as_str()?.to_string(),
            ))
        }))
    }

    /// Waits until job `job_id` is in `state` (e.g. `RUNNING`).
    pub fn wait_job_state(&self, job_id: &str, state: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("job {job_id} to be {state}"), timeout, || {
            let job = self.rest_get(&format!("/jobs/{job_id}"))?;
            Ok((job["state"] == state).then_some(()))
        })
    }

    /// Stops the TaskManager and then the JobManager (SIGTERM, then SIGKILL after 15 s).
    pub fn stop(&mut self) -> Result<()> {
        let taskmanagers = std::mem::take(&mut self.taskmanagers);
        for child in taskmanagers.into_iter().chain(self.jobmanager.take()) {
            stop_child(child)?;
        }
        Ok(())
    }

    /// The JVMs' pids (JobManager, then TaskManager), for signalling them with something else.
    pub fn pids(&self) -> Vec<u32> {
        self.jobmanager
            .iter()
            .chain(&self.taskmanagers)
            .map(ChildGuard::pid)
            .collect()
    }

    /// Waits for both JVMs to exit on their own (after a signal sent elsewhere).
    pub fn wait_exited(&mut self, timeout: Duration) -> Result<()> {
        for child in self
            .jobmanager
            .iter_mut()
            .chain(self.taskmanagers.iter_mut())
        {
            child.wait_timeout(timeout)?;
        }
        Ok(())
    }

    /// Kills only the JobManager (the REST API goes away; the TaskManager stays).
    pub fn stop_jobmanager(&mut self) -> Result<()> {
        match self.jobmanager.take() {
            Some(c) => stop_child(c),
            None => Ok(()),
        }
    }
}

fn stop_child(mut child: ChildGuard) -> Result<()> {
    if child.is_running() {
        child.signal(15)?;
        if child.wait_timeout(Duration::from_secs(15)).is_err() {
            child.signal(9)?;
            child.wait_timeout(Duration::from_secs(5))?;
        }
    }
    Ok(())
}

impl Drop for LocalFlink {
    fn drop(&mut self) {
        // Dropping a ChildGuard SIGKILLs it; a polite stop first lets Flink flush its logs.
        let _ = self.stop();
    }
}

fn yaml_quote(v: &str) -> String {
    // Paths and JVM options are plain scalars; quote anything YAML could read differently.
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "./_-".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The name of the `i`th TaskManager's child process and stdio file.
fn taskmanager_name(i: usize) -> String {
    match i {
        0 => "taskmanager".to_string(),
        i => format!("taskmanager-{i}"),
    }
}

/// A label value as Flink's PrometheusReporter writes it: every character outside
/// `[a-zA-Z0-9:_]` becomes `_` (`127.0.0.1:6122-6d1794` is `127_0_0_1:6122_6d1794`).
pub fn reporter_label(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A minimal blocking HTTP/1.1 GET on 127.0.0.1 (status, body), enough for Flink's REST API and
/// without pulling an async runtime into synchronous test set-up code.
pub fn http_get(port: u16, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("GET {path}: bad status line in {head:?}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked body"))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
}

/// The streaming job the tests submit: `main(mode, name)`.
pub const JOB_SOURCE: &str = r#"
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

public class FlinkInjectorE2eJob {
    public static void main(String[] args) throws Exception {
        String mode = args.length > 0 ? args[0] : "healthy";
        String name = args.length > 1 ? args[1] : "e2e-" + mode;
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        if ("wide".equals(mode)) {
            // The scrape benchmark's job: 20 vertices (source, 18 maps, sink) x 4 subtasks or
            // the parallelism given, operators with long names (long `get=` lists over REST).
            env.setParallelism(args.length > 2 ? Integer.parseInt(args[2]) : 4);
            env.disableOperatorChaining();
            org.apache.flink.streaming.api.datastream.DataStream<Long> s =
                env.fromSequence(0, Long.MAX_VALUE).name("wide-source")
                    // Event time = processing time, so watermarks advance (watermark-lag panels).
                    .assignTimestampsAndWatermarks(
                        org.apache.flink.api.common.eventtime.WatermarkStrategy
                            .<Long>forMonotonousTimestamps()
                            .withTimestampAssigner((v, t) -> System.currentTimeMillis()))
                    .map(new Throttle(false)).name("wide-map-0");
            for (int i = 1; i < 18; i++) {
                s = s.map(new Double())
                    .name("wide-map-" + i + "-an-operator-name-as-long-as-generated-sql-operators-get");
            }
            s.sinkTo(new DiscardingSink<Long>()).name("wide-sink");
            env.execute(name);
            return;
        }
        env.fromSequence(0, Long.MAX_VALUE).name("e2e-source")
            .map(new Throttle("failing".equals(mode))).name("throttle")
            .keyBy(new Mod())
            .map(new Double()).name("double")
            .sinkTo(new DiscardingSink<Long>()).name("discard");
        env.execute(name);
    }

    /** About 100 records per second; in mode failing, an exception after 20 records. */
    public static class Throttle implements MapFunction<Long, Long> {
        private final boolean fail;
        private long seen;
        Throttle(boolean fail) { this.fail = fail; }
        @Override
        public Long map(Long v) throws Exception {
            Thread.sleep(10);
            if (fail && ++seen > 20) {
                throw new IllegalStateException("e2e job failing on purpose after 20 records");
            }
            return v;
        }
    }

    public static class Mod implements KeySelector<Long, Long> {
        @Override
        public Long getKey(Long v) { return v % 8; }
    }

    public static class Double implements MapFunction<Long, Long> {
        @Override
        public Long map(Long v) { return v * 2; }
    }
}
"#;

/// The events a file must give: (start offset, raw text without the final newline), grouped the
/// way Flink's layout groups them (a record starts with `yyyy-MM-dd HH:mm:ss`), at most 500
/// lines each (the agent's default bound).
pub fn expected_events(data: &[u8]) -> Vec<(u64, String)> {
    let is_start = |l: &[u8]| {
        l.len() >= 19
            && l[..19].iter().enumerate().all(|(i, &b)| match i {
                4 | 7 => b == b'-',
                10 => b == b' ',
                13 | 16 => b == b':',
                _ => b.is_ascii_digit(),
            })
    };
    let mut out: Vec<(u64, String, usize)> = Vec::new();
    let mut pos = 0usize;
    // Only complete lines: a last line without newline is still being written.
    while let Some(i) = data[pos..].iter().position(|&b| b == b'\n') {
        let line = &data[pos..pos + i];
        let text = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
        match out.last_mut() {
            Some(last) if !is_start(line) && last.2 < 500 => {
                last.1.push('\n');
                last.1.push_str(&text);
                last.2 += 1;
            }
            _ => out.push((pos as u64, text.into_owned(), 1)),
        }
        pos += i + 1;
    }
    out.into_iter().map(|(o, t, _)| (o, t)).collect()
}

pub fn included(name: &str) -> bool {
    [".log", ".out", ".err"].iter().any(|s| name.ends_with(s)) && !name.starts_with('.')
}

pub fn log_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if included(&e.file_name().to_string_lossy()) && e.metadata()?.len() > 0 {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}
