//! JSON strings that carry arbitrary path bytes, in Python's
//! `surrogateescape` convention.
//!
//! Valid UTF-8 is written as text; each byte that is not part of valid UTF-8
//! (always `0x80..=0xFF`) is written as the escape `\udcNN`. A Python peer
//! that decodes the JSON and calls `os.fsencode` gets the original bytes
//! back, and so does [`decode`].

/// Why a JSON string could not be turned back into path bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The text is not a complete JSON string literal.
    #[error("expected a JSON string")]
    NotAString,
    /// A backslash escape that JSON does not define, or a bad `\u` escape.
    #[error("invalid escape at byte {0}")]
    BadEscape(usize),
    /// A surrogate escape that stands for no byte: a high surrogate without
    /// its low half, or a low surrogate outside `\udc80..\udcff`.
    #[error("lone surrogate \\u{0:04x} does not encode a path byte")]
    LoneSurrogate(u16),
    /// A raw control character, which JSON forbids inside strings.
    #[error("raw control character at byte {0}")]
    ControlCharacter(usize),
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as a quoted JSON string literal, for storing as text.
pub fn encode_string(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    encode(bytes, &mut out);
    String::from_utf8(out).expect("the encoder writes UTF-8")
}

/// Appends `bytes` to `out` as a quoted JSON string literal.
pub fn encode(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    // Most paths are printable ASCII with nothing to escape: copy them.
    if bytes
        .iter()
        .all(|&b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    for chunk in bytes.utf8_chunks() {
        escape_str(chunk.valid().as_bytes(), out);
        for &b in chunk.invalid() {
            out.extend_from_slice(b"\\udc");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        }
    }
    out.push(b'"');
}

fn escape_str(s: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

/// Decodes a quoted JSON string literal (as found in a JSON document) into
/// path bytes, mapping `\udc80..\udcff` back to single bytes.
pub fn decode(literal: &str) -> Result<Vec<u8>, DecodeError> {
    let s = literal.as_bytes();
    if s.len() < 2 || s[0] != b'"' || s[s.len() - 1] != b'"' {
        return Err(DecodeError::NotAString);
    }
    let body = &s[1..s.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        match b {
            b'\\' => {
                let at = i + 1;
                let esc = *body.get(i + 1).ok_or(DecodeError::BadEscape(at))?;
                i += 2;
                match esc {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let u = hex4(body, i).ok_or(DecodeError::BadEscape(at))?;
                        i += 4;
                        decode_unit(u, body, &mut i, &mut out)?;
                    }
                    _ => return Err(DecodeError::BadEscape(at)),
                }
            }
            b'"' => return Err(DecodeError::NotAString),
            0x00..=0x1f => return Err(DecodeError::ControlCharacter(i + 1)),
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Handles one `\uXXXX` unit (and its low half when it is a high surrogate).
fn decode_unit(u: u16, body: &[u8], i: &mut usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    match u {
        0xd800..=0xdbff => {
            let low = (body.get(*i..*i + 2) == Some(b"\\u"))
                .then(|| hex4(body, *i + 2))
                .flatten()
                .filter(|l| (0xdc00..=0xdfff).contains(l))
                .ok_or(DecodeError::LoneSurrogate(u))?;
            *i += 6;
            let c = 0x10000 + (((u as u32) - 0xd800) << 10) + ((low as u32) - 0xdc00);
            push_char(char::from_u32(c).ok_or(DecodeError::LoneSurrogate(u))?, out);
        }
        0xdc80..=0xdcff => out.push((u & 0xff) as u8),
        0xdc00..=0xdfff => return Err(DecodeError::LoneSurrogate(u)),
        _ => push_char(char::from_u32(u as u32).ok_or(DecodeError::LoneSurrogate(u))?, out),
    }
    Ok(())
}

fn push_char(c: char, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn hex4(s: &[u8], at: usize) -> Option<u16> {
    let digits = s.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> String {
        let mut out = Vec::new();
        encode(b, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_like_python_surrogateescape() {
        assert_eq!(enc(b"/a b"), r#""/a b""#);
        assert_eq!(enc(b"/x\xff\n\"\\"), r#""/x\udcff\n\"\\""#);
        assert_eq!(enc("é".as_bytes()), "\"é\"");
        assert_eq!(enc(b"\x01\x7f"), r#""\u0001\u007f""#);
        // A truncated multi-byte sequence is escaped byte by byte.
        assert_eq!(enc(b"\xc3"), r#""\udcc3""#);
    }

    #[test]
    fn decodes_escapes_and_pairs() {
        assert_eq!(decode(r#""/x\udcff\n""#).unwrap(), b"/x\xff\n");
        assert_eq!(decode(r#""\ud83d\ude00""#).unwrap(), "😀".as_bytes());
        assert_eq!(decode(r#""\u00e9\/""#).unwrap(), "é/".as_bytes());
        assert_eq!(decode(r#""\udc00""#), Err(DecodeError::LoneSurrogate(0xdc00)));
        assert_eq!(decode(r#""\ud800x""#), Err(DecodeError::LoneSurrogate(0xd800)));
        assert!(matches!(decode(r#""\x""#), Err(DecodeError::BadEscape(_))));
        assert!(matches!(decode(r#""\u12""#), Err(DecodeError::BadEscape(_))));
        assert_eq!(decode("abc"), Err(DecodeError::NotAString));
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (1..=255u8).collect();
        assert_eq!(decode(&enc(&all)).unwrap(), all);
    }
}
