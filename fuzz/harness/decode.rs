//! The sync message decoder under arbitrary bytes. Shared, file for file, by the fuzz target
//! `sync_decode` and the stable replay test `crates/patrol-core/tests/fuzz_regressions.rs`, so
//! that a kept crash input runs exactly the code that crashed.
//!
//! Properties: decoding never panics; whatever decodes encodes again and decodes to the same
//! message (as a request and as a response).

use patrol_core::DecodeError;
use patrol_core::protocol::{SyncRequest, SyncResponse};

/// The error class of a decode, as regression files are named.
pub fn class<T>(result: &Result<T, DecodeError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(DecodeError::Empty) => "empty",
        Err(DecodeError::BadMagic) => "bad_magic",
        Err(DecodeError::UnknownVersion(_)) => "unknown_version",
        Err(DecodeError::Malformed(_)) => "malformed",
        #[allow(unreachable_patterns)]
        Err(_) => "other",
    }
}

/// Decodes `data` as a request and as a response; returns the class of the request's decode.
pub fn run(data: &[u8]) -> &'static str {
    let request = SyncRequest::decode(data);
    if let Ok(request) = &request {
        let again = request
            .encode()
            .map_err(|e| e.to_string())
            .and_then(|bytes| SyncRequest::decode(&bytes).map_err(|e| e.to_string()));
        assert_eq!(
            again.as_ref(),
            Ok(request),
            "a decoded request does not round-trip"
        );
    }
    let response = SyncResponse::decode(data);
    if let Ok(response) = &response {
        let again = response
            .encode()
            .map_err(|e| e.to_string())
            .and_then(|bytes| SyncResponse::decode(&bytes).map_err(|e| e.to_string()));
        assert_eq!(
            again.as_ref(),
            Ok(response),
            "a decoded response does not round-trip"
        );
    }
    class(&request)
}
