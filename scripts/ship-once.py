#!/usr/bin/env python3
"""One agent run on a corpus, against a fresh broker, for A/B comparisons of agent builds.

    target/release/bench-shipping --write-corpus /tmp/corpus.log
    scripts/ship-once.py /tmp/corpus.log target/release/flink-agent [more agent builds...]

For each binary given (in turn, so builds interleave when repeated with --rounds N): a fresh
tansu on 127.0.0.1, the topic created ahead, the agent started on a log dir holding the
corpus, and its metrics polled every 10 ms. Prints when the first event was acknowledged,
when all but the last were (the last one waits for the multi-line idle time), the agent's
CPU seconds and each busy thread's CPU seconds and context switches. With --perf, the run is
recorded with `perf record` into perf-<build>-<round>.data. Figures, not tests.
"""
import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TANSU = os.path.join(ROOT, ".tools/bin/tansu")
# As the agent image runs it (tests/src/lib.rs, AGENT_ALLOCATOR_ENV).
ALLOCATOR_ENV = {"MIMALLOC_ARENA_EAGER_COMMIT": "0", "MIMALLOC_PURGE_DELAY": "0"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def create_topic(bootstrap, topic):
    # The test crate's kafka-consume tool would need a build; tansu's own CLI creates topics.
    subprocess.run(
        [TANSU, "topic", "create", topic, "--broker", f"tcp://{bootstrap}", "--partitions", "1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def metric(port, name):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def threads(pid):
    out = {}
    for t in glob.glob(f"/proc/{pid}/task/*"):
        try:
            stat = open(t + "/stat").read()
            status = open(t + "/status").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        f = stat.rsplit(") ", 1)[1].split()
        cpu = (int(f[11]) + int(f[12])) / 100
        switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        if cpu > 0.02:
            out[f"{name}#{t.rsplit('/', 1)[1]}"] = (cpu, switches)
    return out


def count_events(corpus):
    """One event per line that starts with a timestamp (the corpus generator's records)."""
    with open(corpus, "rb") as f:
        return sum(1 for line in f if line[:2] == b"20")


def start_broker(topic):
    """A fresh tansu on 127.0.0.1 with `topic` created; returns (process, bootstrap)."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen(
        [TANSU, "broker", "--listener-url", f"tcp://{bootstrap}",
         "--advertised-listener-url", f"tcp://{bootstrap}", "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        create_topic(bootstrap, topic)
    except BaseException:
        broker.kill()
        broker.wait()
        raise
    return broker, bootstrap


def log_dir_with(work, corpus):
    """`work`/log, holding `corpus` under a Flink TaskManager log name if one is given."""
    log_dir = os.path.join(work, "log")
    os.mkdir(log_dir)
    if corpus:
        shutil.copy(corpus, os.path.join(log_dir, "flink--taskmanager-0-bench.log"))
    return log_dir


def spawn_agent(agent, log_dir, bootstrap, topic, metrics_port):
    """The agent as the benchmarks run it: the image's allocator settings, Flink unreachable."""
    env = dict(os.environ, TZ="UTC", RUST_LOG="warn", **ALLOCATOR_ENV)
    return subprocess.Popen(
        [agent, "--log-dir", log_dir, "--brokers", bootstrap, "--topic", topic,
         "--metrics-listen", f"127.0.0.1:{metrics_port}", "--flink-rest", "http://127.0.0.1:1",
         "--pod-name", "bench-pod"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(corpus, agent, events, label, perf):
    work = tempfile.mkdtemp()
    metrics_port = free_port()
    broker, bootstrap = start_broker("ship-once")
    try:
        log_dir = log_dir_with(work, corpus)
        t0 = time.time()
        p = spawn_agent(agent, log_dir, bootstrap, "ship-once", metrics_port)
        rec = None
        if perf:
            rec = subprocess.Popen(["perf", "record", "-F", "1999", "-p", str(p.pid), "-o",
                                    f"perf-{os.path.basename(agent)}-{label}.data"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = None
        while True:
            if time.time() - t0 > 600:
                sys.exit("the agent did not ship the corpus in 600 s")
            sent = metric(metrics_port, "flink_agent_events_sent_total") or 0
            now = time.time() - t0
            if sent and first is None:
                first = now
            if sent + 1 >= events:
                break
            time.sleep(0.01)
        f = open(f"/proc/{p.pid}/stat").read().rsplit(") ", 1)[1].split()
        cpu = (int(f[11]) + int(f[12])) / 100
        busy = " ".join(f"{k}={c:.2f}s/{s}sw" for k, (c, s) in sorted(threads(p.pid).items()))
        print(f"{os.path.basename(agent)} {label}: first ack {first:.3f} s, all but the last "
              f"{now:.3f} s, after the first {now - first:.3f} s, CPU {cpu:.2f} s | {busy}")
        if rec:
            rec.send_signal(2)
            rec.wait()
        p.terminate()
        p.wait()
    finally:
        broker.kill()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("agents", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--perf", action="store_true")
    a = ap.parse_args()
    events = count_events(a.corpus)
    for r in range(1, a.rounds + 1):
        for agent in a.agents:
            run(a.corpus, agent, events, f"round {r}", a.perf)


if __name__ == "__main__":
    main()
