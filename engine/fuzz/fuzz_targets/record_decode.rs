//! Fuzz target for the log record and segment header decoders
//! (`opticache_engine::record`): arbitrary bytes go to `decode_header`,
//! `decode` and `SegmentHeader::decode`, which must never panic, and whatever
//! parses must satisfy the format's invariants:
//! - `decode` and `decode_header` agree on the header, and on the error when
//!   the header itself is bad;
//! - `Empty` means exactly "32 zero bytes where a header should be";
//! - a decoded record fits in the input, is 8-aligned in length, and
//!   re-encodes to the very bytes it was decoded from (so the decoder accepts
//!   nothing the encoder cannot produce);
//! - the same for a segment header and its 4096 bytes.
//!
//! The input is also read as a record to encode, so that the encode → decode
//! direction is exercised even while the fuzzer has not yet found valid
//! records: that round trip must give back exactly what went in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opticache_engine::limits::KEY_LEN_MAX;
use opticache_engine::record::{
    self, DecodeError, RecordKind, SegmentHeader, SegmentHeaderError, RECORD_ALIGN, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    check_record_decode(data);
    check_segment_header_decode(data);
    check_encode_round_trip(data);
});

fn check_record_decode(data: &[u8]) {
    let header = record::decode_header(data);
    let zero_header = data.len() >= RECORD_HEADER_LEN && data[..RECORD_HEADER_LEN].iter().all(|&b| b == 0);
    assert_eq!(
        header == Err(DecodeError::Empty),
        zero_header,
        "Empty must mean exactly an all-zero header: {header:?}"
    );
    if let Err(DecodeError::Truncated { needed, available }) = header {
        assert_eq!((needed, available), (RECORD_HEADER_LEN, data.len()));
    }

    match record::decode(data) {
        Ok(rec) => {
            assert_eq!(header, Ok(rec.header), "decode and decode_header disagree");
            assert!(rec.encoded_len <= data.len());
            assert_eq!(rec.encoded_len % RECORD_ALIGN, 0);
            assert_eq!(rec.encoded_len, record::encoded_len(rec.key.len(), rec.value.len()));
            assert_eq!(rec.header.encoded_len(), rec.encoded_len);
            assert!(record::lengths_valid(rec.header.kind, rec.key.len(), rec.value.len()));
            let mut again = vec![0xA5; rec.encoded_len];
            let n = record::encode_into(
                &mut again,
                rec.header.kind,
                rec.key,
                rec.value,
                rec.header.version,
                rec.header.expiry_ms,
            );
            assert_eq!(n, rec.encoded_len);
            assert_eq!(&again[..], &data[..n], "a decoded record must re-encode to its own bytes");
        }
        Err(err) => {
            // decode runs decode_header first: if the header is bad, both
            // must report the same thing.
            if let Err(header_err) = header {
                assert_eq!(err, header_err);
            }
            if let DecodeError::Truncated { needed, available } = err {
                assert!(available < needed && available == data.len());
            }
        }
    }
}

fn check_segment_header_decode(data: &[u8]) {
    match SegmentHeader::decode(data) {
        Ok(h) => {
            assert!(h.is_valid());
            let block = h.encode();
            assert_eq!(
                &block[..],
                &data[..SEGMENT_HEADER_LEN],
                "a decoded segment header must re-encode to its own bytes"
            );
        }
        Err(SegmentHeaderError::Empty) => {
            assert!(data[..SEGMENT_HEADER_LEN].iter().all(|&b| b == 0));
        }
        Err(SegmentHeaderError::Truncated { needed, available }) => {
            assert_eq!((needed, available), (SEGMENT_HEADER_LEN, data.len()));
        }
        Err(_) => {}
    }
}

/// Reads the input as `[kind, key_len_lo, key_len_hi, version: 8, expiry: 8,
/// rest]`, the rest split into key and value, and checks that encoding then
/// decoding is the identity.
fn check_encode_round_trip(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<19>() else {
        return;
    };
    let kind = match head[0] % 4 {
        0 => RecordKind::Put,
        1 => RecordKind::Delete,
        2 => RecordKind::Chunk,
        _ => RecordKind::ChunkedPut,
    };
    let want_key_len = usize::from(u16::from_le_bytes([head[1], head[2]]));
    let key_len = (want_key_len % KEY_LEN_MAX + 1).min(rest.len());
    if key_len == 0 {
        return;
    }
    let (key, value) = rest.split_at(key_len);
    let value = if kind == RecordKind::Delete { &[][..] } else { value };
    let mut version = [0u8; 8];
    version.copy_from_slice(&head[3..11]);
    let mut expiry = [0u8; 8];
    expiry.copy_from_slice(&head[11..19]);
    let (version, expiry_ms) = (u64::from_le_bytes(version), u64::from_le_bytes(expiry));

    // Garbage after the record must not matter, and stale bytes in the
    // buffer must not leak into the padding.
    let len = record::encoded_len(key.len(), value.len());
    let mut buf = vec![0xFF; len + RECORD_ALIGN];
    let n = record::encode_into(&mut buf, kind, key, value, version, expiry_ms);
    assert_eq!(n, len);
    let rec = record::decode(&buf).expect("an encoded record decodes");
    assert_eq!(rec.header.kind, kind);
    assert_eq!((rec.key, rec.value), (key, value));
    assert_eq!((rec.header.version, rec.header.expiry_ms), (version, expiry_ms));
    assert_eq!(rec.encoded_len, n);
}
