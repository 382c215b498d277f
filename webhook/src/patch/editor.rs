//! Builds the JSON patch by applying every operation to a working copy of the pod (its view, see
//! `view.rs`) as it is emitted. Later operations then see earlier ones (the second volume of a pod
//! that had none is `/spec/volumes/-`, not another `/spec/volumes`), and an operation that would
//! not apply is caught here rather than by the API server.
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path} is not {expected}")]
    Shape {
        path: String,
        expected: &'static str,
    },
    #[error("invalid pointer {0}")]
    Pointer(String),
    #[error("{0}")]
    Patch(#[from] json_patch::PatchError),
}

/// RFC 6901: `~` and `/` inside a reference token (annotation keys contain `/`).
pub fn escape(token: &str) -> String {
    // Most tokens need nothing; `replace` would allocate twice for each of them.
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1")
    } else {
        token.to_string()
    }
}

fn unescape(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains('~') {
        token.replace("~1", "/").replace("~0", "~").into()
    } else {
        token.into()
    }
}

/// A JSON pointer built from unescaped tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn new(tokens: &[&str]) -> Path {
        tokens.iter().fold(Path(String::new()), |p, t| p.join(t))
    }

    pub fn join(&self, token: impl std::fmt::Display) -> Path {
        Path(format!("{}/{}", self.0, escape(&token.to_string())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct Editor<'a> {
    original: &'a Value,
    /// How the working copy is made from the original: its view, or (in tests that check the view
    /// holds all the engine reads) the whole pod.
    copy: fn(&Value) -> Value,
    pod: Value,
    ops: Vec<PatchOperation>,
}

impl<'a> Editor<'a> {
    #[cfg(test)]
    pub fn new(original: &'a Value) -> Editor<'a> {
        Editor::copying(original, super::view::prune)
    }

    pub fn copying(original: &'a Value, copy: fn(&Value) -> Value) -> Editor<'a> {
        Editor {
            original,
            copy,
            pod: copy(original),
            ops: Vec::new(),
        }
    }

    /// The pod with every operation so far applied.
    pub fn pod(&self) -> &Value {
        &self.pod
    }

    /// Like `Value::pointer`, which unescapes (and so allocates for) every token.
    pub fn get(&self, path: &Path) -> Option<&Value> {
        path.0
            .split('/')
            .skip(1)
            .try_fold(&self.pod, |value, token| match value {
                Value::Object(map) => map.get(unescape(token).as_ref()),
                Value::Array(list) => token.parse::<usize>().ok().and_then(|i| list.get(i)),
                _ => None,
            })
    }

    pub fn into_ops(self) -> Vec<PatchOperation> {
        self.ops
    }

    /// Runs `f`; if it fails, the pod and the patch are as they were before, so a part is applied
    /// whole or not at all. Parts check for conflicts before their first edit, so the rebuild
    /// (rather than a snapshot on every call) is paid only when an edit fails half-way.
    pub fn transaction<E>(
        &mut self,
        f: impl FnOnce(&mut Editor<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let len = self.ops.len();
        let result = f(self);
        if result.is_err() && self.ops.len() > len {
            self.ops.truncate(len);
            self.pod = (self.copy)(self.original);
            // These operations applied in this order a moment ago; should replaying them fail
            // anyway, dropping them all still leaves a patch that matches the pod.
            if json_patch::patch(&mut self.pod, &self.ops).is_err() {
                self.ops.clear();
                self.pod = (self.copy)(self.original);
            }
        }
        result
    }

    pub fn add(&mut self, path: &Path, value: Value) -> Result<(), EditError> {
        let pointer =
            PointerBuf::parse(path.as_str()).map_err(|_| EditError::Pointer(path.0.clone()))?;
        let op = PatchOperation::Add(AddOperation {
            path: pointer,
            value,
        });
        // A single `add` that fails changes nothing, so the undo log of `patch` is not needed.
        json_patch::patch_unsafe(&mut self.pod, std::slice::from_ref(&op))?;
        self.ops.push(op);
        Ok(())
    }

    /// Appends to the array at `path`, creating the array when it is absent or null.
    pub fn append(&mut self, path: &Path, value: Value) -> Result<(), EditError> {
        match self.get(path) {
            Some(Value::Array(_)) => self.add(&path.join("-"), value),
            None | Some(Value::Null) => self.add(path, Value::Array(vec![value])),
            Some(_) => Err(EditError::Shape {
                path: path.0.clone(),
                expected: "an array",
            }),
        }
    }

    /// Sets `key` in the map at `path`, creating the map when it is absent or null.
    pub fn put(&mut self, path: &Path, key: &str, value: Value) -> Result<(), EditError> {
        match self.get(path) {
            Some(Value::Object(_)) => self.add(&path.join(key), value),
            None | Some(Value::Null) => {
                let mut map = Map::new();
                map.insert(key.to_string(), value);
                self.add(path, Value::Object(map))
            }
            Some(_) => Err(EditError::Shape {
                path: path.0.clone(),
                expected: "a map",
            }),
        }
    }

    /// Sets several keys: one operation creating the whole map when it is absent, else one per key.
    pub fn put_all(&mut self, path: &Path, entries: Vec<(String, Value)>) -> Result<(), EditError> {
        if entries.is_empty() {
            return Ok(());
        }
        match self.get(path) {
            None | Some(Value::Null) => {
                self.add(path, Value::Object(entries.into_iter().collect()))
            }
            _ => entries
                .into_iter()
                .try_for_each(|(key, value)| self.put(path, &key, value)),
        }
    }
}
