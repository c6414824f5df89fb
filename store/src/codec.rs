//! How records are encoded on disk and in snapshots: bincode followed by a CRC-32 of it, so a
//! torn or corrupted record is detected and reported instead of being silently misread.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record checksum mismatch (corrupt data)")]
    Checksum,
    #[error("record too short to hold a checksum (corrupt data)")]
    Truncated,
    #[error("record cannot be decoded: {0}")]
    Decode(String),
    #[error("record cannot be encoded: {0}")]
    Encode(String),
}

/// Encodes `value` and appends its checksum.
pub fn seal<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = bincode::serialize(value).map_err(|e| CodecError::Encode(e.to_string()))?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Verifies the checksum and decodes.
pub fn open<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let split = bytes.len().checked_sub(4).ok_or(CodecError::Truncated)?;
    let (body, crc) = bytes.split_at(split);
    let expected = u32::from_le_bytes(crc.try_into().expect("split leaves exactly four bytes"));
    if crc32fast::hash(body) != expected {
        return Err(CodecError::Checksum);
    }
    bincode::deserialize(body).map_err(|e| CodecError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_detected() {
        let sealed = seal(&(7u64, "x".to_string())).unwrap();
        assert_eq!(open::<(u64, String)>(&sealed).unwrap(), (7, "x".to_string()));
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(matches!(open::<(u64, String)>(&bad), Err(CodecError::Checksum)));
        assert!(matches!(open::<u64>(&[1, 2]), Err(CodecError::Truncated)));
    }
}
