//! Reading a Gloo document field by field from its YAML value.
//!
//! Gloo's documents have many fields detour has no use for, so they cannot be
//! deserialised strictly; and `#[serde(flatten)]` would lose the path of a malformed
//! field. Instead each mapping is read through [`Fields`], which hands out fields by
//! name with their full path and remembers which were taken: what is left is exactly
//! what the import does not carry.

use serde_norway::{Mapping, Value};

/// A field that cannot be read: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

pub type Read<T> = Result<T, FieldError>;

/// The fields of one mapping of a document.
pub struct Fields<'a> {
    path: String,
    map: &'a Mapping,
    taken: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// `value` read as a mapping found at `path` (`""` for the document itself).
    pub fn of(value: &'a Value, path: &str) -> Read<Fields<'a>> {
        match value {
            Value::Mapping(map) => Ok(Fields {
                path: path.to_string(),
                map,
                taken: Vec::new(),
            }),
            other => Err(FieldError {
                path: path.to_string(),
                message: format!("expected a mapping, found {}", describe(other)),
            }),
        }
    }

    /// The path of field `key` of this mapping.
    pub fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn error(&self, key: &str, message: String) -> FieldError {
        FieldError {
            path: self.path(key),
            message,
        }
    }

    /// The value of `key`, marked as taken; `null` reads as absent, as in Kubernetes.
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.taken.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn string(&mut self, key: &'static str) -> Read<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(self.error(key, format!("expected a string, found {}", describe(other))))
            }
        }
    }

    pub fn required_string(&mut self, key: &'static str) -> Read<String> {
        match self.string(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.error(key, "required".into())),
        }
    }

    /// An unsigned 32-bit number (protobuf JSON may write one as a string of digits).
    pub fn uint(&mut self, key: &'static str) -> Read<Option<u32>> {
        let value = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let number = match value {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => s.parse::<u32>().ok(),
            _ => None,
        };
        number.map(Some).ok_or_else(|| {
            self.error(
                key,
                format!(
                    "expected a number from 0 to {}, found {}",
                    u32::MAX,
                    describe(value)
                ),
            )
        })
    }

    pub fn boolean(&mut self, key: &'static str) -> Read<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(
                key,
                format!("expected true or false, found {}", describe(other)),
            )),
        }
    }

    /// The mapping at `key`, when present.
    pub fn mapping(&mut self, key: &'static str) -> Read<Option<Fields<'a>>> {
        let path = self.path(key);
        self.get(key).map(|v| Fields::of(v, &path)).transpose()
    }

    /// The items of the list at `key` with their paths (`key[i]`); absent is empty.
    pub fn list(&mut self, key: &'static str) -> Read<Vec<(String, &'a Value)>> {
        let path = self.path(key);
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect()),
            Some(other) => {
                Err(self.error(key, format!("expected a list, found {}", describe(other))))
            }
        }
    }

    /// The fields present but never taken, as `(path, name)`, in document order.
    pub fn rest(&self) -> Vec<(String, String)> {
        self.map
            .iter()
            .filter_map(|(k, v)| {
                let name = match k {
                    Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                let taken = self.taken.iter().any(|t| *t == name);
                (!taken && !v.is_null()).then(|| (self.path(&name), name))
            })
            .collect()
    }
}

/// What a value is, for messages: `a string "x"`, `a list`.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn fields_are_read_with_their_paths_and_the_rest_is_what_was_not_taken() {
        let v = value("{a: x, n: 3, s: \"4\", l: [1, 2], m: {b: true}, extra: 1, gone: null}");
        let mut f = Fields::of(&v, "spec").unwrap();
        assert_eq!(f.string("a").unwrap().as_deref(), Some("x"));
        assert_eq!(f.uint("n").unwrap(), Some(3));
        assert_eq!(f.uint("s").unwrap(), Some(4));
        assert_eq!(f.list("l").unwrap()[1].0, "spec.l[1]");
        let mut m = f.mapping("m").unwrap().unwrap();
        assert_eq!(m.boolean("b").unwrap(), Some(true));
        assert_eq!(f.string("missing").unwrap(), None);
        assert_eq!(f.rest(), [("spec.extra".to_string(), "extra".to_string())]);
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let v = value("{n: many, l: x, top: [1]}");
        let mut f = Fields::of(&v, "spec").unwrap();
        let e = f.uint("n").unwrap_err();
        assert_eq!(e.path, "spec.n");
        assert!(e.message.contains("the string \"many\""), "{e:?}");
        assert_eq!(f.list("l").unwrap_err().path, "spec.l");
        assert_eq!(f.required_string("name").unwrap_err().message, "required");
        let e = Fields::of(&v["top"], "spec.top").err().unwrap();
        assert_eq!(e.message, "expected a mapping, found a list");
    }
}
