//! Lower-case hex, as digests, serials and key identifiers are shown.

use std::fmt::Write as _;

/// Lower-case hex of `bytes`, without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
