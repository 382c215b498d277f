//! The parts of a pod that the engine reads or patches, and nothing else. managedFields alone is a
//! third of a JobManager pod, and the engine never looks at it, at `status` or at most of `spec`;
//! every operation's path lies inside what is kept, so an operation applies to the view exactly
//! when it applies to the whole pod. The same tree prunes a decoded pod (`prune`, for the CLI and
//! the tests) and decodes one straight off the wire (`PodView`, for admission), where what is
//! dropped is skipped by the parser without ever being built.
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Which keys of a JSON object are kept, and how much of each.
#[derive(Debug)]
enum Keep {
    All,
    Only(&'static [(&'static str, Keep)]),
}

type Fields = &'static [(&'static str, Keep)];

const POD: Fields = &[
    (
        "metadata",
        Keep::Only(&[
            // The name and generateName only name the pod in logs.
            ("name", Keep::All),
            ("generateName", Keep::All),
            ("labels", Keep::All),
            ("annotations", Keep::All),
        ]),
    ),
    (
        "spec",
        Keep::Only(&[
            ("volumes", Keep::All),
            ("containers", Keep::All),
            ("initContainers", Keep::All),
            ("hostAliases", Keep::All),
            ("restartPolicy", Keep::All),
            // Raised when shorter than the agent's shutdown needs.
            ("terminationGracePeriodSeconds", Keep::All),
            // hostNetwork pods share the node's ports: the agent's port and probes differ.
            ("hostNetwork", Keep::All),
        ]),
    ),
];

/// The view of an already decoded pod. A value that is not an object where one is expected is
/// kept whole: the engine then reports the shape it finds, as it would on the whole pod.
pub fn prune(pod: &Value) -> Value {
    prune_fields(pod, POD)
}

fn prune_fields(value: &Value, fields: Fields) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    let kept = fields.iter().filter_map(|(key, keep)| {
        let v = map.get(*key)?;
        let v = match keep {
            Keep::All => v.clone(),
            Keep::Only(sub) => prune_fields(v, sub),
        };
        Some((key.to_string(), v))
    });
    Value::Object(kept.collect())
}

/// Decodes a pod into the same view as `prune` (`null` stays `null`).
pub struct PodView;

impl<'de> DeserializeSeed<'de> for PodView {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(KeepVisitor(POD))
    }
}

struct KeepSeed(&'static Keep);

impl<'de> DeserializeSeed<'de> for KeepSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Keep::All => de::Deserialize::deserialize(d),
            Keep::Only(fields) => d.deserialize_any(KeepVisitor(fields)),
        }
    }
}

/// An object key, looked up in the kept fields without allocating for the ones that are dropped.
struct FieldSeed(Fields);

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Option<&'static (&'static str, Keep)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Option<&'static (&'static str, Keep)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|(name, _)| *name == key))
    }
}

/// Builds the kept part of an object; any other value is built whole, as `Value` would.
struct KeepVisitor(Fields);

impl<'de> Visitor<'de> for KeepVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(field) = map.next_key_seed(FieldSeed(self.0))? {
            match field {
                // A repeated key replaces the earlier value, as in `Value`.
                Some((name, sub)) => {
                    out.insert(name.to_string(), map.next_value_seed(KeepSeed(sub))?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoded(text: &str) -> Value {
        let mut de = serde_json::Deserializer::from_str(text);
        PodView.deserialize(&mut de).expect("decodes")
    }

    #[test]
    fn decoding_keeps_what_pruning_keeps() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "jm-", "labels": {"type": "flink-native-kubernetes"},
                         "annotations": null, "managedFields": [{"manager": "kubectl"}],
                         "ownerReferences": [{"kind": "ReplicaSet"}]},
            "spec": {"containers": [{"name": "flink-main-container", "env": [{"name": "A"}]}],
                     "volumes": [], "restartPolicy": "Never", "serviceAccountName": "flink",
                     "affinity": {"nodeAffinity": {}}},
            "status": {"phase": "Pending"}
        });
        let want = json!({
            "metadata": {"generateName": "jm-", "labels": {"type": "flink-native-kubernetes"},
                         "annotations": null},
            "spec": {"containers": [{"name": "flink-main-container", "env": [{"name": "A"}]}],
                     "volumes": [], "restartPolicy": "Never"}
        });
        assert_eq!(prune(&pod), want);
        assert_eq!(decoded(&pod.to_string()), want);
    }

    #[test]
    fn values_of_another_shape_are_kept_whole() {
        for text in [
            r#"{"metadata": "x", "spec": [1, {"a": 2}]}"#,
            r#"{"metadata": null, "spec": 4.5}"#,
            r#"{"metadata": {"labels": [true, -3, "s"]}, "spec": {"containers": {"k": 1}}}"#,
            r#"[{"metadata": {}}]"#,
            "null",
            r#""pod""#,
        ] {
            let whole: Value = serde_json::from_str(text).expect("json");
            assert_eq!(decoded(text), prune(&whole), "{text}");
        }
    }

    #[test]
    fn escaped_and_repeated_keys_decode_as_value_does() {
        // "spe\u0063" is "spec" with an escape: the parser hands it over as an owned string.
        let text = r#"{"spe\u0063": {"volumes": [1]}, "metadata": {"labels": {"a": "1"}},
                       "metadata": {"labels": {"b": "2"}}}"#;
        let whole: Value = serde_json::from_str(text).expect("json");
        assert_eq!(decoded(text), prune(&whole));
        assert_eq!(decoded(text)["metadata"]["labels"], json!({"b": "2"}));
    }

    #[test]
    fn broken_json_inside_a_dropped_field_is_still_an_error() {
        let mut de = serde_json::Deserializer::from_str(r#"{"status": {"phase": tru}}"#);
        assert!(PodView.deserialize(&mut de).is_err());
    }
}
