//! Request body content encodings.

use std::io::Read;

use crate::error::{ErrorCode, Failure};

/// Inflates a `Content-Encoding: gzip` body: every member, in order (gzip
/// allows members back to back, and `cat a.gz b.gz` makes such a body), and
/// nothing else — bytes after a member that are not another whole member
/// refuse the body, as does a corrupt or truncated member. At most
/// `inflated_bytes_max + 1` bytes are inflated, so the caller can tell a body
/// over the limit from one exactly at it without inflating a bomb.
pub(super) fn gunzip(body: &[u8], inflated_bytes_max: usize) -> Result<Vec<u8>, Failure> {
    let mut inflated = Vec::new();
    flate2::read::MultiGzDecoder::new(body).take(inflated_bytes_max as u64 + 1).read_to_end(&mut inflated).map_err(
        |e| {
            Failure::new(
                ErrorCode::InvalidGzip,
                format!(
                    "invalid gzip body ({e}): it must be one or more whole gzip members and nothing after them; \
                     nothing was written"
                ),
            )
        },
    )?;
    Ok(inflated)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn every_member_is_inflated_and_nothing_else_is_accepted() {
        let two = [gzip(b"first\n"), gzip(b"second\n")].concat();
        assert_eq!(gunzip(&two, 1_000).unwrap(), b"first\nsecond\n");
        for trailing in [&b"garbage"[..], &[0u8; 8][..], &gzip(b"cut")[..10]] {
            let body = [gzip(b"first\n").as_slice(), trailing].concat();
            let error = gunzip(&body, 1_000).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidGzip, "{trailing:?}: {error}");
        }
        // The cap stops inflation one byte past it.
        assert_eq!(gunzip(&gzip(&[b'x'; 100]), 10).unwrap().len(), 11);
    }
}
