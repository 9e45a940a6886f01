//! Upstream's encrypted parameters (`ParameterEncryption`): AES-GCM with a 128-bit tag, the
//! key given base64-encoded, and each value stored as
//! `base64(iv length as a 4-byte big-endian int ‖ iv ‖ ciphertext and tag)`; the plaintext is
//! the value's compact JSON. `aes-128` uses a 12-byte iv, `aes-256` a 128-byte one (as
//! upstream does), `noop` stores values as they are.

use aes_gcm::aead::consts::{U12, U128};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::{Aes128, Aes256};
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use serde_json::Value;

type Aes128Gcm = AesGcm<Aes128, U12>;
type Aes256Gcm128 = AesGcm<Aes256, U128>;

/// The configured keys.
#[derive(Clone, Default)]
pub struct ParameterEncryption {
    aes128: Option<Aes128Gcm>,
    aes256: Option<Aes256Gcm128>,
}

impl std::fmt::Debug for ParameterEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParameterEncryption")
            .field("aes-128", &self.aes128.is_some())
            .field("aes-256", &self.aes256.is_some())
            .finish()
    }
}

fn key_bytes(name: &str, key: &str, len: usize) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|e| format!("the {name} key is not base64: {e}"))?;
    if bytes.len() != len {
        return Err(format!(
            "the {name} key has {} bytes, {name} needs {len}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

impl ParameterEncryption {
    /// From base64 keys (16 bytes for `aes-128`, 32 for `aes-256`).
    pub fn new(aes128: Option<&str>, aes256: Option<&str>) -> Result<Self, String> {
        Ok(ParameterEncryption {
            aes128: aes128
                .map(|k| key_bytes("aes-128", k, 16))
                .transpose()?
                .map(|k| Aes128Gcm::new_from_slice(&k).expect("16-byte key")),
            aes256: aes256
                .map(|k| key_bytes("aes-256", k, 32))
                .transpose()?
                .map(|k| Aes256Gcm128::new_from_slice(&k).expect("32-byte key")),
        })
    }

    /// The value of a parameter encrypted with `scheme`.
    pub fn decrypt(&self, scheme: &str, value: &Value) -> Result<Value, String> {
        let text = match (scheme, value) {
            ("noop" | "" | "off", v) => return Ok(v.clone()),
            (_, Value::String(s)) => s,
            // upstream decrypts strings only and keeps anything else as it is
            (_, v) => return Ok(v.clone()),
        };
        let message = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("not base64: {e}"))?;
        let (iv_len, rest) = message
            .split_first_chunk::<4>()
            .ok_or("too short for an iv length")?;
        let iv_len = u32::from_be_bytes(*iv_len) as usize;
        let missing = |name: &str| format!("encrypted with {name}, for which no key is configured");
        let plain = match scheme {
            "aes-128" => {
                let cipher = self.aes128.as_ref().ok_or_else(|| missing(scheme))?;
                if iv_len != 12 || rest.len() < 12 {
                    return Err("invalid iv length".into());
                }
                let (iv, body) = rest.split_at(12);
                cipher.decrypt(Nonce::<U12>::from_slice(iv), body)
            }
            "aes-256" => {
                let cipher = self.aes256.as_ref().ok_or_else(|| missing(scheme))?;
                if iv_len != 128 || rest.len() < 128 {
                    return Err("invalid iv length".into());
                }
                let (iv, body) = rest.split_at(128);
                cipher.decrypt(Nonce::<U128>::from_slice(iv), body)
            }
            other => return Err(format!("unknown encryption scheme `{other}`")),
        }
        .map_err(|_| "cannot be decrypted with the configured key".to_string())?;
        serde_json::from_slice(&plain).map_err(|e| format!("decrypts to invalid JSON: {e}"))
    }

    /// Encrypts `value` as upstream does (for operator tools and tests).
    pub fn encrypt(&self, scheme: &str, value: &Value) -> Result<Value, String> {
        let plain = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        let (iv, body) = match scheme {
            "aes-128" => {
                let cipher = self.aes128.as_ref().ok_or("no aes-128 key configured")?;
                let iv: [u8; 12] = rand_bytes();
                let body = cipher
                    .encrypt(Nonce::<U12>::from_slice(&iv), plain.as_slice())
                    .map_err(|e| e.to_string())?;
                (iv.to_vec(), body)
            }
            "aes-256" => {
                let cipher = self.aes256.as_ref().ok_or("no aes-256 key configured")?;
                let iv: [u8; 128] = rand_bytes();
                let body = cipher
                    .encrypt(Nonce::<U128>::from_slice(&iv), plain.as_slice())
                    .map_err(|e| e.to_string())?;
                (iv.to_vec(), body)
            }
            other => return Err(format!("unknown encryption scheme `{other}`")),
        };
        let mut message = (iv.len() as u32).to_be_bytes().to_vec();
        message.extend(iv);
        message.extend(body);
        Ok(Value::String(
            base64::engine::general_purpose::STANDARD.encode(message),
        ))
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let r = uuid::Uuid::new_v4().into_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const K128: &str = "ra1V6AfOYAv0jCzEdufIFA==";
    const K256: &str = "j5rLzhtxwzPyUVUy8/p8XJmBoKeDoSzNJP1SITJEY9E=";

    #[test]
    fn round_trips_both_schemes_and_refuses_a_missing_key() {
        let e = ParameterEncryption::new(Some(K128), Some(K256)).unwrap();
        for scheme in ["aes-128", "aes-256"] {
            let v = json!({"secret": [1, "two"]});
            let sealed = e.encrypt(scheme, &v).unwrap();
            assert_ne!(sealed, v);
            assert_eq!(e.decrypt(scheme, &sealed).unwrap(), v);
        }
        let sealed = e.encrypt("aes-256", &json!("s")).unwrap();
        let none = ParameterEncryption::default();
        assert!(none
            .decrypt("aes-256", &sealed)
            .unwrap_err()
            .contains("no key"));
        assert_eq!(
            none.decrypt("noop", &json!("plain")).unwrap(),
            json!("plain")
        );
        assert!(e.decrypt("rot13", &sealed).unwrap_err().contains("unknown"));
    }

    /// A value framed by hand as upstream's `AesEncryption.encrypt` frames it (4-byte iv
    /// length, iv, ciphertext with its tag), under a fixed iv.
    #[test]
    fn reads_upstreams_framing() {
        let e = ParameterEncryption::new(Some(K128), None).unwrap();
        // iv length 12, a fixed iv, the AES-GCM of the JSON `"x"` under K128
        let key = base64::engine::general_purpose::STANDARD
            .decode(K128)
            .unwrap();
        let cipher = Aes128Gcm::new_from_slice(&key).unwrap();
        let iv = [7u8; 12];
        let body = cipher
            .encrypt(Nonce::<U12>::from_slice(&iv), b"\"x\"".as_slice())
            .unwrap();
        let mut msg = 12u32.to_be_bytes().to_vec();
        msg.extend(iv);
        msg.extend(body);
        let sealed = Value::String(base64::engine::general_purpose::STANDARD.encode(msg));
        assert_eq!(e.decrypt("aes-128", &sealed).unwrap(), json!("x"));
    }
}
