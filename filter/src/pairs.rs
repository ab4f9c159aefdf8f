//! Header maps in the proxy-wasm wire format, kept as the bytes Envoy hands over.
//!
//! Envoy passes a header map (`proxy_get_header_map_pairs`) and takes one
//! (`proxy_http_call`, `proxy_send_local_response`) as one buffer: the number of pairs
//! (u32, little endian), then each pair's name and value lengths (u32 each), then each
//! name and value followed by a NUL byte. The filter keeps a request's headers in this
//! form for a possible replay: reading them costs one copy out of Envoy and no
//! allocation per header, and values are bytes — a client may send header values that
//! are not UTF-8 (obs-text), which must neither stop the filter nor be altered when the
//! request is replayed.

/// A header map, checked once when read: every length fits the buffer and every name
/// and value ends with its NUL byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairs {
    bytes: Vec<u8>,
    count: usize,
}

impl Default for Pairs {
    /// The empty map (a count of zero), as Envoy takes it.
    fn default() -> Pairs {
        Pairs::from_pairs([])
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

impl Pairs {
    /// Takes a buffer in the wire format; `None` when it is malformed. An empty buffer
    /// is an empty map (Envoy sends nothing for a map without headers).
    pub fn parse(bytes: Vec<u8>) -> Option<Pairs> {
        if bytes.is_empty() {
            return Some(Pairs::default());
        }
        let count = u32_at(&bytes, 0)?;
        let mut at = count.checked_mul(8)?.checked_add(4)?;
        for i in 0..count {
            for len in [u32_at(&bytes, 4 + i * 8)?, u32_at(&bytes, 8 + i * 8)?] {
                at = at.checked_add(len)?;
                if *bytes.get(at)? != 0 {
                    return None;
                }
                at += 1;
            }
        }
        (at == bytes.len()).then_some(Pairs { bytes, count })
    }

    /// The map of `pairs`, in the wire format.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Pairs {
        let pairs: Vec<(&[u8], &[u8])> = pairs.into_iter().collect();
        let data: usize = pairs.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
        let mut bytes = Vec::with_capacity(4 + pairs.len() * 8 + data);
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        bytes.extend_from_slice(&len(pairs.len()));
        for (name, value) in &pairs {
            bytes.extend_from_slice(&len(name.len()));
            bytes.extend_from_slice(&len(value.len()));
        }
        for (name, value) in &pairs {
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(value);
            bytes.push(0);
        }
        Pairs {
            bytes,
            count: pairs.len(),
        }
    }

    /// The buffer, as Envoy takes it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every `(name, value)` in Envoy's order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let bytes = self.bytes.as_slice();
        let mut at = 4 + self.count * 8;
        (0..self.count).map_while(move |i| {
            // Checked in `parse`; a `None` here would only end the iteration early.
            let name_len = u32_at(bytes, 4 + i * 8)?;
            let value_len = u32_at(bytes, 8 + i * 8)?;
            let name = bytes.get(at..at + name_len)?;
            at += name_len + 1;
            let value = bytes.get(at..at + value_len)?;
            at += value_len + 1;
            Some((name, value))
        })
    }

    /// The first value of `name` (header names compare without case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every `(name, value)` as text; `None` when one is not UTF-8.
    pub fn to_text(&self) -> Option<Vec<(&str, &str)>> {
        self.iter()
            .map(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
            .collect()
    }

    /// The first value of `name` as text, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> Pairs {
        Pairs::from_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), *v)))
    }

    #[test]
    fn round_trips_and_finds_values_without_case() {
        let m = map(&[(":method", b"GET"), ("x-Latin", b"caf\xe9"), ("empty", b"")]);
        let parsed = Pairs::parse(m.as_bytes().to_vec()).unwrap();
        assert_eq!(parsed, m);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed.get(":METHOD"), Some(&b"GET"[..]));
        assert_eq!(parsed.get("x-latin"), Some(&b"caf\xe9"[..]));
        assert_eq!(parsed.get_str("x-latin"), None, "not UTF-8");
        assert_eq!(parsed.get_str("empty"), Some(""));
        assert_eq!(parsed.get("missing"), None);
        assert_eq!(parsed.to_text(), None, "one value is not UTF-8");
        assert_eq!(map(&[("a", b"b")]).to_text(), Some(vec![("a", "b")]));
        let names: Vec<&[u8]> = parsed.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b":method"[..], b"x-Latin", b"empty"]);
    }

    #[test]
    fn the_layout_is_envoys() {
        let m = map(&[("a", b"bc")]);
        assert_eq!(m.as_bytes(), b"\x01\0\0\0\x01\0\0\0\x02\0\0\0a\0bc\0");
        assert!(Pairs::parse(Vec::new()).unwrap().is_empty());
        assert_eq!(Pairs::default().as_bytes(), b"\0\0\0\0");
    }

    #[test]
    fn malformed_buffers_are_refused() {
        let good = map(&[("a", b"bc")]).as_bytes().to_vec();
        for bad in [
            good[..good.len() - 1].to_vec(),        // last NUL missing
            [good.clone(), b"x".to_vec()].concat(), // trailing byte
            b"\x01\0\0".to_vec(),                   // short count
            b"\xff\xff\xff\xff".to_vec(),           // count beyond the buffer
            {
                let mut v = good.clone();
                v[4] = 9; // name length beyond the buffer
                v
            },
            {
                let mut v = good.clone();
                v[13] = b'x'; // name not NUL-terminated
                v
            },
        ] {
            assert_eq!(Pairs::parse(bad.clone()), None, "{bad:?}");
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Some(p) = Pairs::parse(bytes.clone()) {
                if !bytes.is_empty() {
                    prop_assert_eq!(p.as_bytes(), &bytes[..]);
                }
                prop_assert_eq!(p.iter().count(), p.len());
            }
        }

        #[test]
        fn every_map_round_trips(pairs in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..8), prop::collection::vec(any::<u8>(), 0..8)), 0..6)
        ) {
            let m = Pairs::from_pairs(pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            let back = Pairs::parse(m.as_bytes().to_vec()).unwrap();
            let got: Vec<(Vec<u8>, Vec<u8>)> = back.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(got, pairs);
        }
    }
}
