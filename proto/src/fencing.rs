//! Epoch fencing on the wire between coordinators and nodes.
//!
//! A node refuses a write whose coordinator epoch is older than the highest
//! it has seen (FAILED_PRECONDITION) and names that epoch in the trailing
//! metadata key [`FENCED_BY_EPOCH`], so the coordinator can tell a fence from
//! a compare-and-set conflict (same code) without parsing the message, and
//! can tell "I was deposed" (the epoch is another coordinator's) from "I was
//! promoted while this request was on its way" (the epoch is its own).
//!
//! Invariant: the key is set only on fencing refusals, always with the
//! node's highest epoch as a decimal integer.

use tonic::metadata::MetadataValue;
use tonic::Status;

/// The metadata key carrying the epoch that fenced a write.
pub const FENCED_BY_EPOCH: &str = "opticache-fenced-by-epoch";

/// Marks `status` as a fencing refusal by `highest_epoch`.
pub fn mark(status: &mut Status, highest_epoch: u64) {
    status.metadata_mut().insert(FENCED_BY_EPOCH, MetadataValue::from(highest_epoch));
}

/// The epoch that fenced the refused write, if `status` is a fencing refusal.
pub fn fenced_by(status: &Status) -> Option<u64> {
    status.metadata().get(FENCED_BY_EPOCH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_status_names_its_epoch_and_survives_the_wire_form() {
        let mut s = Status::failed_precondition("fenced");
        mark(&mut s, 42);
        assert_eq!(fenced_by(&s), Some(42));
        // What a client decodes: the status rebuilt from its header map.
        let mut headers = tonic::codegen::http::HeaderMap::new();
        s.add_header(&mut headers).expect("headers");
        let back = Status::from_header_map(&headers).expect("a status");
        assert_eq!(fenced_by(&back), Some(42));
        assert_eq!(fenced_by(&Status::failed_precondition("expected version 3")), None);
    }
}
