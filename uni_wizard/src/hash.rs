//! SHA-256 over bytes and over canonical JSON: what approvals, tokens, provenance and the
//! tools hash with. A leaf: it imports nothing of the crate.

use serde::Serialize;
use serde_json::Value;

/// SHA-256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    digest_hex(&Sha256::digest(bytes))
}

/// SHA-256 (lowercase hex) of `value`'s compact JSON text, the same text `to_string` gives,
/// streamed into the hasher instead of built first. serde_json's map is ordered by key (no
/// `preserve_order`), so for a [`Value`] the text, and the hash, are canonical.
pub fn sha256_json<T: Serialize + ?Sized>(value: &T) -> String {
    use sha2::{Digest, Sha256};
    let mut w = HashWriter(Sha256::new());
    // Writing to a hasher cannot fail, and the values hashed here (JSON values and plain
    // structs of them) always serialise.
    let _ = serde_json::to_writer(&mut w, value);
    digest_hex(&w.0.finalize())
}

/// [`sha256_json`] of a JSON value, the same hash for the same text, with a faster path for
/// strings: one that needs no escaping (no `"`, `\\` or control character, the only bytes
/// serde_json escapes) goes to the hasher in one piece instead of through serde_json's
/// byte-by-byte escaper. Provenance hashes every output with it, so a 1 KiB `file_read`
/// result costs a scan and a hash, not a second serialisation.
pub fn sha256_value(value: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut w = HashWriter(Sha256::new());
    hash_value(&mut w, value);
    digest_hex(&w.0.finalize())
}

fn hash_value(w: &mut HashWriter, value: &Value) {
    match value {
        Value::String(s) => hash_str(w, s),
        Value::Array(items) => {
            w.put(b"[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    w.put(b",");
                }
                hash_value(w, v);
            }
            w.put(b"]");
        }
        Value::Object(map) => {
            w.put(b"{");
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    w.put(b",");
                }
                hash_str(w, k);
                w.put(b":");
                hash_value(w, v);
            }
            w.put(b"}");
        }
        // Null, booleans and numbers in serde_json's own spelling.
        scalar => {
            let _ = serde_json::to_writer(&mut *w, scalar);
        }
    }
}

fn hash_str(w: &mut HashWriter, s: &str) {
    // Branch-free over the bytes so the check vectorises.
    let plain = !s.bytes().fold(false, |esc, b| esc | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if plain {
        w.put(b"\"");
        w.put(s.as_bytes());
        w.put(b"\"");
    } else {
        let _ = serde_json::to_writer(&mut *w, s);
    }
}

/// A hash map for the hot path's in-memory indexes (breakers, the prediction model, the
/// provenance ring). foldhash, seeded at random per map: a few instructions per short key where
/// std's SipHash costs hundreds, and, with the seed unknown outside the process, no way to aim
/// keys at one bucket (the maps are bounded in size besides). Never persisted: iteration order
/// and hashes differ between processes.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// FNV-1a, 64 bits: a stable, fast, non-cryptographic hash, for keys that are stored or sent and
/// must agree across processes and releases (the pattern DB's argument fingerprint), where
/// collision resistance against a chosen input buys nothing. Never for anything that proves or
/// binds (records, approvals, tokens hash with SHA-256).
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Fnv64 {
    /// The FNV-1a offset basis.
    pub const fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash of everything fed so far.
    pub const fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv64 {
    fn default() -> Fnv64 {
        Fnv64::new()
    }
}

impl std::io::Write for Fnv64 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feeds everything written to it into a SHA-256 hasher.
struct HashWriter(sha2::Sha256);

impl HashWriter {
    fn put(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
}

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.put(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A digest as lowercase hex. A 32-byte one is written in one go (`hex::encode` collects
/// char by char); any other length takes the general path.
fn digest_hex(digest: &[u8]) -> String {
    let mut buf = [0u8; 64];
    if hex::encode_to_slice(digest, &mut buf).is_ok()
        && let Ok(s) = std::str::from_utf8(&buf)
    {
        return s.to_owned();
    }
    hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Proves both streamed JSON hashes are the hash of the `to_string` text (what provenance
    /// records as `result_sha256`), escapes and number spellings included, and the hex is the
    /// usual lowercase form.
    #[test]
    fn sha256_json_hashes_the_compact_text() {
        let v = json!({"z": "line\n\"quoted\" \u{e9}", "a": [1, 2.5, null, true], "m": {"k": "v"}});
        assert_eq!(sha256_json(&v), sha256_hex(v.to_string().as_bytes()));
        let cases = [
            v,
            json!({}),
            json!([]),
            json!("plain"),
            json!({"a\u{1}b": "tab\there", "back\\slash": ["\u{7f}", "\u{1f}", "é😀", ""], "n": [-0.0, 1e300, -7, 18446744073709551615u64]}),
            json!({"content": "x".repeat(1024), "nested": {"deeper": [{"k": null}, [], {}]}, "t": false}),
        ];
        for c in &cases {
            assert_eq!(sha256_value(c), sha256_hex(c.to_string().as_bytes()), "{c}");
        }
        use sha2::Digest;
        assert_eq!(sha256_hex(b"abc"), hex::encode(sha2::Sha256::digest(b"abc")));
    }

    /// Proves `Fnv64` is FNV-1a 64 (the published test vectors), so fingerprints stored by one
    /// release are the fingerprints the next one computes.
    #[test]
    fn fnv64_is_fnv1a() {
        let fnv = |b: &[u8]| {
            let mut h = Fnv64::new();
            h.update(b);
            h.finish()
        };
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
