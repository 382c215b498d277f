//! What each part should do for one pod: the pod's annotations over the namespace's policy over
//! the policy. A part with nothing to do is a `SkipReason`, never an error.
use chrono_tz::Tz;

use super::{agent, parts, MutationContext, SkipReason};
use crate::annotations::{Overrides, UsrlibOverride, LOG_TOPIC, USRLIB_SUBPATH};
use crate::policy::{HostAlias, NativeSidecar, Settings, DEFAULT_USRLIB_MOUNT_PATH};

/// An annotation that names a source turns the part on even where the policy has none; the mount
/// path and sub-path then come from the policy when it has them.
pub fn usrlib(
    s: &Settings,
    o: &Overrides,
    warnings: &mut Vec<String>,
) -> Result<parts::Usrlib, SkipReason> {
    let policy = s.usrlib.as_ref();
    let source = match &o.usrlib {
        Some(UsrlibOverride::Skip) => Err(SkipReason::OptedOut),
        Some(UsrlibOverride::Source(src)) => Ok(src.clone()),
        None => policy
            .and_then(|u| u.source.clone())
            .ok_or(SkipReason::DisabledByPolicy),
    };
    let source = source.inspect_err(|_| {
        if o.usrlib_sub_path.is_some() {
            warnings.push(format!(
                "annotation {USRLIB_SUBPATH} ignored: no usrlib volume is injected"
            ));
        }
    })?;
    Ok(parts::Usrlib {
        source,
        mount_path: policy.map_or(DEFAULT_USRLIB_MOUNT_PATH.to_string(), |u| {
            u.mount_path.clone()
        }),
        sub_path: o
            .usrlib_sub_path
            .clone()
            .or_else(|| policy.and_then(|u| u.sub_path.clone())),
    })
}

/// The annotation's entries are added to the policy's.
pub fn host_aliases(s: &Settings, o: &Overrides) -> Result<Vec<HostAlias>, SkipReason> {
    let want = parts::merge_aliases(&[&s.host_aliases, &o.host_aliases]);
    if want.is_empty() {
        Err(SkipReason::DisabledByPolicy)
    } else {
        Ok(want)
    }
}

pub fn timezone(s: &Settings, o: &Overrides) -> Result<Tz, SkipReason> {
    o.timezone
        .or(s.timezone)
        .ok_or(SkipReason::DisabledByPolicy)
}

/// Unlike usrlib, an annotation cannot turn the agent on: only the policy knows image and Kafka.
pub fn agent<'a>(
    s: &'a Settings,
    o: &'a Overrides,
    ctx: &MutationContext,
    warnings: &mut Vec<String>,
) -> Result<agent::Agent<'a>, SkipReason> {
    if o.agent == Some(false) {
        return Err(SkipReason::OptedOut);
    }
    let Some(settings) = &s.agent else {
        if o.log_topic.is_some() {
            warnings.push(format!(
                "annotation {LOG_TOPIC} ignored: the agent is off for this namespace"
            ));
        }
        return Err(SkipReason::DisabledByPolicy);
    };
    // An explicit policy value is the admin's word; `auto` is the caller's finding.
    let native = match settings.native_sidecar {
        NativeSidecar::Enabled => true,
        NativeSidecar::Disabled => false,
        NativeSidecar::Auto => ctx.native_sidecar,
    };
    Ok(agent::Agent {
        settings,
        topic: o.log_topic.as_deref().unwrap_or(&settings.kafka.topic),
        native,
    })
}
