//! Variable-length integers for the manifest and spill formats: LEB128 for
//! unsigned values, zigzag for signed ones. Decoding never panics on bad
//! input; it reports where the bytes ran out or overflowed.

/// Bytes that do not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside a value.
    #[error("record ends early")]
    Truncated,
    /// A varint longer than 64 bits.
    #[error("integer does not fit in 64 bits")]
    Overflow,
}

/// Appends `v` as LEB128.
#[inline]
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded (small negative numbers stay short).
#[inline]
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Reads one LEB128 value and advances `buf` past it.
#[inline]
pub fn get_u64(buf: &mut &[u8]) -> Result<u64, CodecError> {
    // Most values (deltas, lengths, ids, nanoseconds' high bytes) are one byte.
    if let Some(&b) = buf.first()
        && b < 0x80
    {
        *buf = &buf[1..];
        return Ok(u64::from(b));
    }
    get_u64_slow(buf)
}

#[inline(never)]
fn get_u64_slow(buf: &mut &[u8]) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(CodecError::Overflow);
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(v);
        }
    }
    Err(if buf.len() >= 10 {
        CodecError::Overflow
    } else {
        CodecError::Truncated
    })
}

/// Advances `buf` past `n` LEB128 values, eight bytes at a time (a value
/// ends at a byte without its top bit), for a lookup passing over records
/// it does not want. Unlike [`get_u64`] it does not check that each value
/// fits in 64 bits: what it passes over is never used.
#[inline]
pub fn skip_n(buf: &mut &[u8], mut n: u32) -> Result<(), CodecError> {
    const TOP: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while n > 0 {
        let Some(word) = buf.get(at..at + 8) else {
            // The last bytes, one at a time.
            for (i, &b) in buf[at..].iter().enumerate() {
                if b < 0x80 {
                    n -= 1;
                    if n == 0 {
                        *buf = &buf[at + i + 1..];
                        return Ok(());
                    }
                }
            }
            return Err(CodecError::Truncated);
        };
        let mut ends = !u64::from_le_bytes(word.try_into().expect("8 bytes")) & TOP;
        let here = ends.count_ones();
        if here >= n {
            // The n-th end in this word.
            for _ in 1..n {
                ends &= ends - 1;
            }
            *buf = &buf[at + ends.trailing_zeros() as usize / 8 + 1..];
            return Ok(());
        }
        n -= here;
        at += 8;
    }
    Ok(())
}

/// Reads a value written by [`put_i64`].
#[inline]
pub fn get_i64(buf: &mut &[u8]) -> Result<i64, CodecError> {
    let u = get_u64(buf)?;
    Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
}

/// Reads a LEB128 value that must fit in 32 bits.
#[inline]
pub fn get_u32(buf: &mut &[u8]) -> Result<u32, CodecError> {
    u32::try_from(get_u64(buf)?).map_err(|_| CodecError::Overflow)
}

/// Reads `n` raw bytes.
#[inline]
pub fn get_bytes<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], CodecError> {
    if buf.len() < n {
        return Err(CodecError::Truncated);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_u64(&mut b, v);
            let mut s = &b[..];
            assert_eq!(get_u64(&mut s), Ok(v));
            assert!(s.is_empty());
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX, -1_000_000_000] {
            let mut b = Vec::new();
            put_i64(&mut b, v);
            assert_eq!(get_i64(&mut &b[..]), Ok(v));
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(get_u64(&mut &[0x80u8, 0x80][..]), Err(CodecError::Truncated));
        assert_eq!(get_u64(&mut &[0xffu8; 11][..]), Err(CodecError::Overflow));
        assert_eq!(
            get_u64(&mut &[0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]),
            Err(CodecError::Overflow)
        );
        assert_eq!(
            get_u32(&mut &[0x80u8, 0x80, 0x80, 0x80, 0x10][..]),
            Err(CodecError::Overflow)
        );
        assert_eq!(get_bytes(&mut &[1u8][..], 2), Err(CodecError::Truncated));
    }

    #[test]
    fn skip_n_passes_exactly_n_values() {
        let values = [0, 1, 127, 128, 300, 1 << 35, u64::MAX, 5, 0x7f, 1 << 14];
        for n in 0..=values.len() as u32 {
            for pad in 0..9 {
                let mut b = Vec::new();
                for v in values {
                    put_u64(&mut b, v);
                }
                b.extend(std::iter::repeat_n(0x42, pad));
                let mut want = &b[..];
                for _ in 0..n {
                    get_u64(&mut want).unwrap();
                }
                let mut s = &b[..];
                skip_n(&mut s, n).unwrap();
                assert_eq!(s, want, "n {n} pad {pad}");
            }
        }
        let mut b = Vec::new();
        put_u64(&mut b, 1 << 40);
        for cut in 0..b.len() {
            assert_eq!(skip_n(&mut &b[..cut], 1), Err(CodecError::Truncated));
        }
    }
}
