#!/usr/bin/env python3
"""Where an agent build's memory is: resident size per mapping, idle or at its peak under load.

    scripts/rss-map.py target/release/flink-agent                 # idle, 6 s after start
    scripts/rss-map.py target/release/flink-agent --corpus /tmp/corpus.log   # shipping

A fresh tansu on 127.0.0.1 (as scripts/ship-once.py), the agent with the image's allocator
environment on an empty log dir (idle) or one holding the corpus (written by
`bench-shipping --write-corpus`). Prints VmHWM, VmRSS, RssAnon, RssFile and the threads, and
the mappings with the most resident memory (Rss, of it Anonymous) from /proc/<pid>/smaps: when
idle at the end of the wait, under load at the largest RSS sampled every 20 ms. Figures, not
tests (BENCHMARKS.md, memory round).
"""
import argparse
import collections
import importlib.util
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("ship_once", os.path.join(HERE, "ship-once.py"))
ship_once = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ship_once)


def status(pid):
    text = open(f"/proc/{pid}/status").read()
    return {k: text.split(k + ":")[1].split("\n")[0].strip()
            for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads")}


def mappings(pid):
    rss, anon, name = collections.Counter(), collections.Counter(), None
    for line in open(f"/proc/{pid}/smaps"):
        parts = line.split()
        if not parts[0].endswith(":"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5] if len(parts) > 5 else "[anon]"
            name = f"{path} {parts[1]} ({(hi - lo) // 1024} kB mapped)"
        elif parts[0] == "Rss:":
            rss[name] += int(parts[1])
        elif parts[0] == "Anonymous:":
            anon[name] += int(parts[1])
    return rss, anon


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("agent")
    ap.add_argument("--corpus", help="ship this file and report the peak")
    ap.add_argument("--wait", type=float, default=6.0, help="idle: seconds after start")
    ap.add_argument("--top", type=int, default=16)
    a = ap.parse_args()

    work = tempfile.mkdtemp()
    metrics_port = ship_once.free_port()
    broker, bootstrap = ship_once.start_broker("rss-map")
    agent = None
    try:
        log_dir = ship_once.log_dir_with(work, a.corpus)
        # The last event waits for the multi-line idle flush: done at all but one.
        events = ship_once.count_events(a.corpus) if a.corpus else 0
        agent = ship_once.spawn_agent(a.agent, log_dir, bootstrap, "rss-map", metrics_port)
        if a.corpus:
            t0, peak, at_peak = time.time(), -1, None
            while True:
                if time.time() - t0 > 600:
                    sys.exit("the agent did not ship the corpus in 600 s")
                rss = int(status(agent.pid)["VmRSS"].split()[0])
                if rss > peak:
                    peak, at_peak = rss, mappings(agent.pid)
                sent = ship_once.metric(metrics_port, "flink_agent_events_sent_total") or 0
                if sent + 1 >= events:
                    break
                time.sleep(0.02)
            print(f"shipped {events - 1} events in {time.time() - t0:.2f} s; "
                  f"largest RSS sampled {peak} kB")
            rss, anon = at_peak
        else:
            time.sleep(a.wait)
            rss, anon = mappings(agent.pid)
        for k, v in status(agent.pid).items():
            print(f"{k}: {v}")
        threads = sorted(open(f"/proc/{agent.pid}/task/{t}/comm").read().strip()
                         for t in os.listdir(f"/proc/{agent.pid}/task"))
        print("threads:", ", ".join(threads))
        print(f"{'Rss kB':>8} {'of it anon':>10}  mapping")
        for name, kb in rss.most_common(a.top):
            if kb:
                print(f"{kb:8d} {anon[name]:10d}  {name}")
    finally:
        if agent:
            agent.terminate()
            agent.wait()
        broker.kill()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
