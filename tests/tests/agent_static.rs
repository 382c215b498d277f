//! The agent as its image ships it (`scripts/build-agent-static.sh`): one statically linked
//! executable, which must still resolve a broker by name (glibc's static NSS) and ship every
//! line once, in order, with the ECS fields.

use anyhow::{ensure, Context, Result};
use flink_injector_tests::agent::{flink_record, shipped_once, start_agent_bin, static_agent_bin};
use flink_injector_tests::broker::Broker;

const PT_INTERP: u32 = 3;

/// The `p_type` of every program header of a 64-bit little-endian ELF file.
fn program_header_types(elf: &[u8]) -> Result<Vec<u32>> {
    ensure!(elf.starts_with(b"\x7fELF"), "not an ELF file");
    ensure!(
        elf.get(4) == Some(&2) && elf.get(5) == Some(&1),
        "not ELF64 little-endian"
    );
    let u16_at = |at: usize| -> Result<usize> {
        let b = elf.get(at..at + 2).context("truncated ELF header")?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let phoff = elf
        .get(0x20..0x28)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .context("truncated ELF header")?;
    let phoff = usize::try_from(phoff)?;
    let (size, count) = (u16_at(0x36)?, u16_at(0x38)?);
    (0..count)
        .map(|i| {
            let at = phoff + i * size;
            elf.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .context("truncated program header")
        })
        .collect()
}

#[test]
fn static_build_loads_no_shared_library() -> Result<()> {
    let bin = static_agent_bin()?;
    let types = program_header_types(&std::fs::read(&bin)?)?;
    // No interpreter, no loader: nothing shared can be mapped in at start.
    ensure!(
        !types.contains(&PT_INTERP),
        "{} names a program interpreter, so it is dynamically linked (program headers {types:?})",
        bin.display()
    );
    // And the check itself tells a dynamic executable apart.
    let dynamic = std::env::current_exe()?;
    ensure!(
        program_header_types(&std::fs::read(&dynamic)?)?.contains(&PT_INTERP),
        "the test executable {} should be dynamically linked",
        dynamic.display()
    );
    Ok(())
}

#[test]
fn static_build_resolves_the_broker_by_name_and_ships_every_line() -> Result<()> {
    const RECORDS: usize = 2_000;
    let bin = static_agent_bin()?;
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let bootstrap = broker.bootstrap();
    let (_, port) = bootstrap
        .rsplit_once(':')
        .context("broker address without a port")?;
    // By name, as `kafka-0.kafka:9092` in a policy: the static glibc reads nsswitch.conf and
    // /etc/hosts itself (a dynamic one loads libnss_files for it).
    let by_name = format!("localhost:{port}");
    let text: String = (0..RECORDS).map(|i| flink_record("static", i)).collect();
    std::fs::write(log_dir.join("flink--taskmanager-0-static.log"), text)?;

    let agent = start_agent_bin(
        &bin,
        &[],
        &log_dir,
        work.path(),
        &by_name,
        "agent-static",
        &[],
    )?;
    let events = shipped_once(&broker, "agent-static", "static", RECORDS, &agent)?;
    let first = events.first().context("no event")?;
    ensure!(
        first["kubernetes"]["pod"]["name"] == "test-pod"
            && first["log"]["file"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("flink--taskmanager-0-static.log")),
        "unexpected event from the static build: {first}"
    );
    Ok(())
}
