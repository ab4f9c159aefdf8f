//! Configuration for the data plane, rendered from the model.

/// A YAML mapping from `key => value` pairs.
macro_rules! map {
    ($($key:expr => $value:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = serde_norway::Mapping::new();
        $( m.insert(serde_norway::Value::from($key), serde_norway::Value::from($value)); )*
        serde_norway::Value::Mapping(m)
    }};
}

mod clusters;
pub mod envoy;
mod routes;
