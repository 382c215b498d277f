//! Builds the JSON patch by applying every operation to a working copy of the pod (its view, see
//! `view.rs`) as it is emitted, with the same `add` as RFC 6902 (the tests apply every patch with
//! json-patch to the whole pod). Later operations then see earlier ones (the second volume of a pod
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
    #[error("cannot add {path}: {why}")]
    Add { path: String, why: &'static str },
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

/// An array index as RFC 6901 writes it: digits, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.len() > 1 && token.starts_with('0') {
        return None;
    }
    token
        .parse()
        .ok()
        .filter(|_| token.bytes().all(|b| b.is_ascii_digit()))
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
        // One allocation for the common token with nothing to escape; `format!` with
        // `escape(&token.to_string())` made three.
        use std::fmt::Write as _;
        let mut path = String::with_capacity(self.0.len() + 24);
        path.push_str(&self.0);
        path.push('/');
        let start = path.len();
        let _ = write!(path, "{token}");
        if path[start..].contains(['~', '/']) {
            let escaped = escape(&path[start..]);
            path.truncate(start);
            path.push_str(&escaped);
        }
        Path(path)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How to take back one `add`, newest last: the working copy is the only copy of the pod, so a
/// failed part is undone in place rather than rebuilt from the original.
#[derive(Debug)]
enum Undo {
    /// The value went into the array at `parent`, at `index`.
    Inserted { parent: Path, index: usize },
    /// The value was set as `key` of the map at `parent`, which held `previous` before.
    Set {
        parent: Path,
        key: String,
        previous: Option<Value>,
    },
}

pub struct Editor {
    pod: Value,
    ops: Vec<PatchOperation>,
    undo: Vec<Undo>,
}

impl Editor {
    /// Edits `pod` in place: the caller hands over its own copy (admission decodes one, the view).
    pub fn new(pod: Value) -> Editor {
        Editor {
            pod,
            ops: Vec::new(),
            undo: Vec::new(),
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
                Value::Array(list) => index(token).and_then(|i| list.get(i)),
                _ => None,
            })
    }

    fn get_mut(&mut self, path: &Path) -> Option<&mut Value> {
        path.0
            .split('/')
            .skip(1)
            .try_fold(&mut self.pod, |value, token| match value {
                Value::Object(map) => map.get_mut(unescape(token).as_ref()),
                Value::Array(list) => index(token).and_then(|i| list.get_mut(i)),
                _ => None,
            })
    }

    pub fn into_ops(self) -> Vec<PatchOperation> {
        self.ops
    }

    /// Runs `f`; if it fails, the pod and the patch are as they were before, so a part is applied
    /// whole or not at all.
    pub fn transaction<E>(
        &mut self,
        f: impl FnOnce(&mut Editor) -> Result<(), E>,
    ) -> Result<(), E> {
        let len = self.ops.len();
        let result = f(self);
        if result.is_err() {
            // `ops` and `undo` grow together, one entry per `add`.
            self.ops.truncate(len);
            let undone = self.undo.split_off(len);
            for undo in undone.into_iter().rev() {
                self.take_back(undo);
            }
        }
        result
    }

    /// Reverses one `add`. Later adds were taken back first, so the parent is where it was.
    fn take_back(&mut self, undo: Undo) {
        match undo {
            Undo::Inserted { parent, index } => {
                if let Some(Value::Array(list)) = self.get_mut(&parent) {
                    if index < list.len() {
                        list.remove(index);
                    }
                }
            }
            Undo::Set {
                parent,
                key,
                previous,
            } => {
                if let Some(Value::Object(map)) = self.get_mut(&parent) {
                    match previous {
                        Some(value) => map.insert(key, value),
                        None => map.remove(&key),
                    };
                }
            }
        }
    }

    /// RFC 6902 `add`, applied to the working copy and recorded in the patch.
    pub fn add(&mut self, path: &Path, value: Value) -> Result<(), EditError> {
        let pointer =
            PointerBuf::parse(path.as_str()).map_err(|_| EditError::Pointer(path.0.clone()))?;
        let Some((parent_str, last)) = path.0.rsplit_once('/') else {
            // Replacing the whole pod is never what a part means to do.
            return Err(EditError::Pointer(path.0.clone()));
        };
        let parent = Path(parent_str.to_string());
        let cannot = |why: &'static str| EditError::Add {
            path: path.0.clone(),
            why,
        };
        let undo = match self.get_mut(&parent) {
            Some(Value::Object(map)) => {
                let key = unescape(last).into_owned();
                let previous = map.insert(key.clone(), value.clone());
                Undo::Set {
                    parent,
                    key,
                    previous,
                }
            }
            Some(Value::Array(list)) => {
                let at = if last == "-" {
                    list.len()
                } else {
                    index(last)
                        .filter(|i| *i <= list.len())
                        .ok_or_else(|| cannot("an index past the end of the array"))?
                };
                list.insert(at, value.clone());
                Undo::Inserted { parent, index: at }
            }
            Some(_) => return Err(cannot("inside a value that is neither a map nor an array")),
            None => return Err(cannot("inside a value that does not exist")),
        };
        self.undo.push(undo);
        self.ops.push(PatchOperation::Add(AddOperation {
            path: pointer,
            value,
        }));
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
