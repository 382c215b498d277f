//! Arbitrary bytes as the value of one pod annotation: the first byte picks the annotation, the
//! rest (as UTF-8, lossily) is its value. Runs the public entry points the patch engine calls,
//! `annotations::opted_out`, `annotations::injected` and `annotations::parse`, which reach every
//! per-annotation parser in webhook/src/annotations.rs.
//!
//! Properties: no panic, no hang, bounded memory; an error names the annotation and carries the
//! value exactly as given (DESIGN.md: "a malformed value is denied with a message that names the
//! annotation, the value and what is expected"); an accepted value yields only validated
//! overrides (IPs parse, hostnames, PVC names and topics are valid, paths are absolute or
//! relative as required); a non-string value is always refused.
#![no_main]

use flink_webhook::annotations::{self, UsrlibOverride};
use flink_webhook::policy::{names, VolumeSource};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const KEYS: [&str; 9] = [
    annotations::INJECT,
    annotations::USRLIB,
    annotations::USRLIB_SUBPATH,
    annotations::TIMEZONE,
    annotations::HOST_ALIASES,
    annotations::LOG_TOPIC,
    annotations::AGENT,
    annotations::INJECTED,
    "flink-injector.io/usrlib-path",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let key = KEYS[sel as usize % KEYS.len()];
    let text = String::from_utf8_lossy(rest).into_owned();
    // 1 in 8 (by the top bits of the selector): not a string, as a hand-written pod could have.
    let value = match sel >> 5 {
        7 => Value::from(text.len() as u64),
        _ => Value::String(text.clone()),
    };
    let is_string = value.is_string();
    let shown = match &value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut map = Map::new();
    map.insert(key.to_string(), value);
    let a = Some(&map);

    match annotations::opted_out(a) {
        Ok(out) => {
            if key == annotations::INJECT {
                let v = text.trim().to_ascii_lowercase();
                assert!(
                    is_string && (v == "true" || v == "false"),
                    "accepted inject {text:?}"
                );
                assert_eq!(out, v == "false");
            } else {
                assert!(!out);
            }
        }
        Err(e) => {
            assert_eq!(e.annotation, annotations::INJECT);
            assert_eq!(e.value, shown);
        }
    }

    let parts = annotations::injected(a);
    for p in &parts {
        assert!(
            !p.is_empty() && !p.contains(',') && p.trim() == p,
            "part {p:?}"
        );
    }
    if key != annotations::INJECTED || !is_string {
        assert!(parts.is_empty());
    }

    let o = match annotations::parse(a) {
        Ok(o) => o,
        Err(e) => {
            assert_eq!(e.annotation, key, "error names another annotation: {e}");
            assert_eq!(e.value, shown, "error carries another value: {e}");
            let msg = e.to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(!e.problem.is_empty(), "{msg}");
            return;
        }
    };
    let parsed_key = !matches!(key, k if k == annotations::INJECT || k == annotations::INJECTED || k.ends_with("usrlib-path"));
    assert!(is_string || !parsed_key, "non-string {key} accepted");
    match &o.usrlib {
        Some(UsrlibOverride::Source(VolumeSource::Nfs { server, path })) => {
            assert!(
                !server.trim().is_empty() && !server.contains(char::is_whitespace),
                "nfs server {server:?}"
            );
            assert!(names::absolute_path(path).is_ok(), "nfs path {path:?}");
        }
        Some(UsrlibOverride::Source(VolumeSource::Pvc { claim_name })) => {
            assert!(
                names::dns_subdomain(claim_name).is_ok(),
                "claim {claim_name:?}"
            );
        }
        Some(UsrlibOverride::Skip) => assert_eq!(text.trim(), "none"),
        None => assert!(key != annotations::USRLIB),
    }
    if let Some(sub) = &o.usrlib_sub_path {
        assert!(names::sub_path(sub).is_ok(), "subpath {sub:?}");
    }
    assert_eq!(o.timezone.is_some(), key == annotations::TIMEZONE);
    for alias in &o.host_aliases {
        assert!(
            alias.ip.parse::<std::net::IpAddr>().is_ok(),
            "ip {:?}",
            alias.ip
        );
        assert!(!alias.hostnames.is_empty());
        for h in &alias.hostnames {
            assert!(names::dns_subdomain(h).is_ok(), "hostname {h:?}");
        }
    }
    assert_eq!(!o.host_aliases.is_empty(), key == annotations::HOST_ALIASES);
    if let Some(t) = &o.log_topic {
        assert!(names::kafka_topic(t).is_ok(), "topic {t:?}");
    }
    if let Some(agent) = o.agent {
        let v = text.trim().to_ascii_lowercase();
        assert_eq!(agent, v == "true", "agent {text:?}");
    }
    assert_eq!(
        !o.warnings.is_empty(),
        key.ends_with("usrlib-path"),
        "warnings {:?}",
        o.warnings
    );
});
