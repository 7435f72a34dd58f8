//! Metadata: ordered string keys with byte values.

use bytes::Bytes;

/// Key/value metadata carried by hellos, requests and events.
///
/// Keys are UTF-8 strings (at most 65,535 bytes); values are arbitrary bytes.
/// Order is kept and a key may repeat; [`Metadata::get`] returns the first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, Bytes)>,
}

impl Metadata {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Bytes>) -> &mut Self {
        self.entries.push((key.into(), value.into()));
        self
    }

    /// Builder form of [`Metadata::insert`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.insert(key, value);
        self
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The first value under `key`, if it is valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Removes every entry under `key`; returns how many there were.
    pub fn remove(&mut self, key: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k != key);
        before - self.entries.len()
    }

    /// All entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn from_entries(entries: Vec<(String, Bytes)>) -> Self {
        Self { entries }
    }
}

impl<K: Into<String>, V: Into<Bytes>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }
}
