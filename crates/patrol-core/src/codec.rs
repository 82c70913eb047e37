//! The one binary form of stored values: a version byte, then postcard, nothing after.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ChangeHash;
use crate::error::{DecodeError, EncodeError};

/// Encodes `value` behind the format `version` byte.
pub fn encode_versioned<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, EncodeError> {
    Ok(postcard::to_extend(value, vec![version])?)
}

/// Decodes a value written by [`encode_versioned`] with `version`; another version, truncation
/// or trailing bytes are errors.
pub fn decode_versioned<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&v, rest)) if v == version => {
            let (value, extra) = postcard::take_from_bytes::<T>(rest)?;
            if !extra.is_empty() {
                return Err(DecodeError::Malformed(format!(
                    "{} trailing bytes",
                    extra.len()
                )));
            }
            Ok(value)
        }
        Some((&v, _)) => Err(DecodeError::UnknownVersion(v)),
    }
}

/// Change hashes as stored: the 32-byte hashes concatenated.
pub fn heads_to_blob(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

/// The inverse of [`heads_to_blob`]; a length that is not a multiple of 32 is an error.
pub fn heads_from_blob(blob: &[u8]) -> Result<Vec<ChangeHash>, DecodeError> {
    if !blob.len().is_multiple_of(32) {
        return Err(DecodeError::Malformed(format!(
            "heads of {} bytes are not whole 32-byte hashes",
            blob.len()
        )));
    }
    Ok(blob
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            ChangeHash(h)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_reject_partial_hashes() {
        let heads = vec![ChangeHash([1; 32]), ChangeHash([2; 32])];
        assert_eq!(heads_from_blob(&heads_to_blob(&heads)), Ok(heads));
        assert!(heads_from_blob(&[0; 33]).is_err());
    }
}
