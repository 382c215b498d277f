//! Arbitrary UTF-8 text (other bytes are skipped: a policy file is read as a UTF-8 string) as a
//! policy file, through `Policy::from_yaml` (what `check-config`, start-up and reload call).
//!
//! Properties: no panic, no hang, bounded memory (YAML aliases, deep nesting, many namespaces);
//! an accepted policy holds only validated values for the base and every namespace it names,
//! and the patch engine run with it on a real TaskManager pod gives a patch that applies and is
//! a no-op on reinvocation.
#![no_main]

use flink_webhook::patch::MutationContext;
use flink_webhook::policy::{names, Policy, Settings, VolumeSource};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_settings(s: &Settings, what: &str) {
    if let Some(u) = &s.usrlib {
        assert!(
            names::absolute_path(&u.mount_path).is_ok(),
            "{what}: mountPath {:?}",
            u.mount_path
        );
        if let Some(sub) = &u.sub_path {
            assert!(names::sub_path(sub).is_ok(), "{what}: subPath {sub:?}");
        }
        match &u.source {
            Some(VolumeSource::Nfs { server, path }) => {
                assert!(!server.trim().is_empty(), "{what}: nfs server {server:?}");
                assert!(
                    names::absolute_path(path).is_ok(),
                    "{what}: nfs path {path:?}"
                );
            }
            Some(VolumeSource::Pvc { claim_name }) => {
                assert!(
                    names::dns_subdomain(claim_name).is_ok(),
                    "{what}: claimName {claim_name:?}"
                );
            }
            None => {}
        }
    }
    for a in &s.host_aliases {
        assert!(
            a.ip.parse::<std::net::IpAddr>().is_ok(),
            "{what}: ip {:?}",
            a.ip
        );
        assert!(!a.hostnames.is_empty(), "{what}: no hostnames for {}", a.ip);
        for h in &a.hostnames {
            assert!(names::dns_subdomain(h).is_ok(), "{what}: hostname {h:?}");
        }
    }
    if let Some(agent) = &s.agent {
        assert!(
            !agent.image.trim().is_empty() && !agent.image.contains(char::is_whitespace),
            "{what}: image {:?}",
            agent.image
        );
        assert!(
            names::kafka_topic(&agent.kafka.topic).is_ok(),
            "{what}: topic {:?}",
            agent.kafka.topic
        );
        assert!(
            names::brokers(&agent.kafka.brokers).is_ok(),
            "{what}: brokers {:?}",
            agent.kafka.brokers
        );
        for (k, v) in &agent.kafka.properties {
            assert!(
                !k.is_empty() && !k.contains(['=', '\n', '\r']) && !v.contains(['\n', '\r']),
                "{what}: kafka property {k:?}={v:?}"
            );
        }
        for q in agent
            .resources
            .requests
            .values()
            .chain(agent.resources.limits.values())
        {
            assert!(names::quantity(q).is_ok(), "{what}: quantity {q:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::from_yaml(text) {
        Ok(p) => p,
        Err(e) => {
            // The message is what check-config prints and the reload log says.
            let _ = e.to_string();
            return;
        }
    };
    let _ = policy.native_sidecar();
    // The namespaces the file names (the map itself is private to the policy).
    let tree: Value = serde_norway::from_str(text).expect("accepted policy re-parses");
    let mut namespaces: Vec<String> = vec![String::new(), "flink-jobs".into()];
    if let Some(map) = tree.get("namespaces").and_then(Value::as_object) {
        namespaces.extend(map.keys().take(8).cloned());
    }
    let pod = flink_injector_fuzz::taskmanager_pod();
    for ns in &namespaces {
        check_settings(policy.for_namespace(ns), ns);
        for native_sidecar in [false, true] {
            let ctx = MutationContext { native_sidecar };
            flink_injector_fuzz::check_engine(&policy, ns, pod, &ctx, false);
        }
    }
});
