//! Files changing under the agent: log4j rotation (with archive renames, `.1` the oldest),
//! truncation, a file deleted while tailed. Every record arrives exactly once.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use flink_injector_tests::agent::{flink_record, shipped_once, start_agent};
use flink_injector_tests::broker::Broker;

/// log4j's DefaultRolloverStrategy with `%i` and max archives: the live file becomes the
/// newest archive (highest index); when the window is full `.1` (the oldest) is deleted and
/// every archive is renamed one index down.
fn log4j_roll(dir: &Path, name: &str, max: usize) -> Result<()> {
    let archive = |i: usize| dir.join(format!("{name}.{i}"));
    let mut count = (1..=max).take_while(|&i| archive(i).exists()).count();
    if count == max {
        std::fs::remove_file(archive(1))?;
        for i in 2..=max {
            std::fs::rename(archive(i), archive(i - 1))?;
        }
        count -= 1;
    }
    std::fs::rename(dir.join(name), archive(count + 1))?;
    Ok(())
}

#[test]
fn log4j_rotation_while_writing() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-rotation";
    let agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;

    let name = "flink--taskmanager-0-rot.log";
    let per_gen = 3000;
    let gens = 8; // 7 rotations with a window of 3 archives: archives are renamed and deleted
    let mut i = 0;
    for gen in 0..gens {
        let mut f = std::fs::File::create(log_dir.join(name))?;
        for burst in 0..10 {
            let mut s = String::new();
            for _ in 0..per_gen / 10 {
                s.push_str(&flink_record("rot", i));
                i += 1;
            }
            f.write_all(s.as_bytes())?;
            // Generation 3 rolls right at a write, with no pause at all.
            if gen != 3 || burst == 9 {
                std::thread::sleep(Duration::from_millis(15));
            }
        }
        drop(f);
        if gen + 1 < gens {
            log4j_roll(&log_dir, name, 3)?;
        }
    }
    let events = shipped_once(&broker, topic, "rot", i, &agent)?;
    // Each generation's events came from a file of its own identity.
    let files: std::collections::HashSet<String> = events
        .iter()
        .filter_map(|e| e["event"]["id"].as_str())
        .map(|id| id.rsplit_once('-').map_or(id, |(f, _)| f).to_string())
        .collect();
    assert_eq!(files.len(), gens, "{files:?}");
    // Generations that were renamed before the agent saw their live name are found as
    // archives instead: at least the ones seen live count as rotations.
    assert!(agent.metric("flink_agent_rotations_total")? >= 1.0);
    Ok(())
}

#[test]
fn truncation_restarts_from_zero() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-truncate";
    let agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;
    let path = log_dir.join("trunc.log");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let write = |f: &mut std::fs::File, from: usize, to: usize| -> Result<()> {
        let s: String = (from..to).map(|i| flink_record("tr", i)).collect();
        f.write_all(s.as_bytes())?;
        Ok(())
    };
    write(&mut f, 0, 500)?;
    // Wait until the agent has shipped it all, then copytruncate-style truncation.
    flink_injector_tests::wait_for("500 events", Duration::from_secs(60), || {
        Ok((agent.metric("flink_agent_events_sent_total")? >= 500.0).then_some(()))
    })?;
    f.set_len(0)?;
    write(&mut f, 500, 540)?; // shorter than before: the size shrank
    std::thread::sleep(Duration::from_millis(800));
    // Truncated again and rewritten past the old size before the agent could see it shrink:
    // the changed first line gives it away.
    f.set_len(0)?;
    write(&mut f, 540, 1500)?;
    shipped_once(&broker, topic, "tr", 1500, &agent)?;
    assert!(agent.metric("flink_agent_truncations_total")? >= 2.0);
    Ok(())
}

#[test]
fn file_deleted_while_tailed_is_read_to_its_end() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-delete";
    let agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;
    let path = log_dir.join("gone.log");
    let mut f = std::fs::File::create(&path)?;
    f.write_all(flink_record("del", 0).as_bytes())?;
    flink_injector_tests::wait_for(
        "the agent to tail gone.log",
        Duration::from_secs(30),
        || Ok((agent.metric("flink_agent_files_tailed")? >= 1.0).then_some(())),
    )?;
    // A burst much larger than one read, then the file is deleted at once: the agent still
    // holds it open and reads it to its end.
    let s: String = (1..20_000).map(|i| flink_record("del", i)).collect();
    f.write_all(s.as_bytes())?;
    drop(f);
    std::fs::remove_file(&path)?;
    shipped_once(&broker, topic, "del", 20_000, &agent)?;
    flink_injector_tests::wait_for("the file to be released", Duration::from_secs(10), || {
        Ok((agent.metric("flink_agent_files_tailed")? == 0.0).then_some(()))
    })?;
    assert_eq!(agent.metric("flink_agent_lost_bytes_total")?, 0.0);
    Ok(())
}
