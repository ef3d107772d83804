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
}
