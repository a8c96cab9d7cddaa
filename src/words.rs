//! Bytes eight at a time in a `u64` (SWAR): the word reads and the
//! zero-byte test that the stanza check's searches and the events' JSON
//! share.

/// `0x01` in every byte: `ONES * b` is `b` in every byte.
pub const ONES: u64 = u64::from_ne_bytes([0x01; 8]);

/// The high bit of every byte.
pub const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// The eight bytes of `s` from `at`, little-endian (byte `at` lowest), so
/// that a bit's `trailing_zeros() / 8` is the place of its byte. Panics
/// unless `s` holds them: callers read only within their slices.
#[inline]
pub fn word(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The four bytes of `s` from `at`, as [`word`] reads eight.
#[inline]
pub fn half(s: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The high bit of each zero byte of `x`: exact for the lowest one (a
/// borrow can only mark bytes above a zero byte), so exact as a yes or no
/// and for the place of the first zero byte.
#[inline]
pub fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_zero_byte_is_found_whatever_the_others() {
        for at in 0..8 {
            for other in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = [other | 1; 8];
                b[at] = 0;
                b[at + 1..].fill(other);
                let x = word(&b, 0);
                assert_eq!((zero_bytes(x).trailing_zeros() / 8) as usize, at);
            }
        }
        assert_eq!(zero_bytes(word(&[1, 2, 3, 4, 0x80, 0xff, 7, 8], 0)), 0);
        assert_eq!(half(b"abcd", 0), u32::from_le_bytes(*b"abcd"));
    }
}
