//! Parsers for GPFS command output: `-Y` colon tables (`mmlsfileset`,
//! `mmlssnapshot`) and the file lists `mmapplypolicy -I defer` writes for
//! ferry's LIST rule (`tests/fake-mm/README.md` gives the formats and their
//! sources).

use crate::sys::Timestamp;
use std::collections::HashMap;

/// The policy ferry runs: every object with the attributes a manifest
/// needs, paths and SHOW text percent-encoded (`ESCAPE '%'`).
pub const LIST_POLICY: &str = "RULE EXTERNAL LIST 'ferry' EXEC '' ESCAPE '%'
RULE 'ferry_all' LIST 'ferry'
  DIRECTORIES_PLUS
  SHOW(VARCHAR(MODE) || ' ' || VARCHAR(FILE_SIZE) || ' ' ||
       VARCHAR(USER_ID) || ' ' || VARCHAR(GROUP_ID) || ' ' ||
       VARCHAR(NLINK) || ' ' ||
       VARCHAR(MODIFICATION_TIME) || ' ' || VARCHAR(CHANGE_TIME))
";

/// A line that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Decodes `%XX` escapes (either hex case) into bytes.
pub fn percent_decode(s: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| ParseError("truncated % escape".into()))?;
            let v = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ParseError(format!("bad % escape {:?}", String::from_utf8_lossy(hex))))?;
            out.push(v);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Rows of a `-Y` table from command `cmd`, each as column name to decoded
/// value. Columns are found by the HEADER line's names. Returns no rows
/// for the "No snapshots in file system" answer.
pub fn parse_y(output: &[u8], cmd: &str) -> Result<Vec<HashMap<String, Vec<u8>>>, ParseError> {
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let fields: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        if fields.first() != Some(&cmd.as_bytes()) {
            if line.starts_with(b"No snapshots") {
                continue;
            }
            return err(format!(
                "unexpected line from {cmd}: {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        if fields.get(2) == Some(&&b"HEADER"[..]) {
            header = Some(fields.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect());
            continue;
        }
        let Some(h) = &header else {
            return err(format!("{cmd} printed a row before its HEADER line"));
        };
        let mut row = HashMap::new();
        for (name, value) in h.iter().zip(&fields).skip(6) {
            if !name.is_empty() && name != "reserved" {
                row.insert(name.clone(), percent_decode(value)?);
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// One record of ferry's policy list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRecord {
    /// Inode number.
    pub ino: u64,
    /// Generation number.
    pub generation: u64,
    /// Snapshot id (0 for the live filesystem).
    pub snap_id: u64,
    /// `st_mode`, rebuilt from the `ls -l` string.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u64,
    /// Modification time (microseconds).
    pub mtime: Timestamp,
    /// Change time (microseconds).
    pub ctime: Timestamp,
    /// Full path, raw bytes.
    pub path: Vec<u8>,
}

fn num<T: std::str::FromStr>(b: &[u8], what: &str) -> Result<T, ParseError> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ParseError(format!("bad {what}: {:?}", String::from_utf8_lossy(b))))
}

/// Parses one line (without its newline) of `<prefix>.list.ferry`:
/// `ino gen snapid  SHOW -- PATH`, SHOW being `mode size uid gid nlink
/// mtime-date mtime-clock ctime-date ctime-clock` after percent-decoding.
pub fn parse_list_line(line: &[u8]) -> Result<ListRecord, ParseError> {
    let t: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if t.len() != 7 || !t[3].is_empty() || t[5] != b"--" {
        return err("expected 'ino gen snapid  SHOW -- PATH'");
    }
    let show = percent_decode(t[4])?;
    let s: Vec<&[u8]> = show.split(|&b| b == b' ').collect();
    if s.len() != 9 {
        return err(format!("SHOW has {} fields, expected 9", s.len()));
    }
    let path = percent_decode(t[6])?;
    if path.first() != Some(&b'/') || path.contains(&0) {
        return err("path is not absolute or holds NUL");
    }
    Ok(ListRecord {
        ino: num(t[0], "inode")?,
        generation: num(t[1], "generation")?,
        snap_id: num(t[2], "snapshot id")?,
        mode: parse_mode(s[0])?,
        size: num(s[1], "size")?,
        uid: num(s[2], "uid")?,
        gid: num(s[3], "gid")?,
        nlink: num(s[4], "nlink")?,
        mtime: parse_time(s[5], s[6])?,
        ctime: parse_time(s[7], s[8])?,
        path,
    })
}

/// `drwxr-sr-t` style to `st_mode` bits.
pub fn parse_mode(s: &[u8]) -> Result<u32, ParseError> {
    if s.len() != 10 {
        return err(format!("bad mode {:?}", String::from_utf8_lossy(s)));
    }
    let kind = match s[0] {
        b'-' => libc::S_IFREG,
        b'd' => libc::S_IFDIR,
        b'l' => libc::S_IFLNK,
        b'c' => libc::S_IFCHR,
        b'b' => libc::S_IFBLK,
        b'p' => libc::S_IFIFO,
        b's' => libc::S_IFSOCK,
        _ => return err(format!("bad file type in mode {:?}", String::from_utf8_lossy(s))),
    };
    let mut bits = 0u32;
    for (i, &c) in s[1..].iter().enumerate() {
        let (want, special) = match i % 3 {
            0 => (b'r', None),
            1 => (b'w', None),
            _ => (
                b'x',
                Some(match i {
                    2 => (libc::S_ISUID, b's', b'S'),
                    5 => (libc::S_ISGID, b's', b'S'),
                    _ => (libc::S_ISVTX, b't', b'T'),
                }),
            ),
        };
        let bit = 1 << (8 - i);
        match (c, special) {
            (b'-', _) => {}
            (c, _) if c == want => bits |= bit,
            (c, Some((flag, lower, _))) if c == lower => bits |= bit | flag,
            (c, Some((flag, _, upper))) if c == upper => bits |= flag,
            _ => return err(format!("bad mode {:?}", String::from_utf8_lossy(s))),
        }
    }
    Ok(kind | bits)
}

/// `YYYY-MM-DD` `HH:MM:SS[.ffffff]`, read as UTC (tests/fake-mm/README.md).
pub fn parse_time(date: &[u8], clock: &[u8]) -> Result<Timestamp, ParseError> {
    let text = format!("{}T{}", String::from_utf8_lossy(date), String::from_utf8_lossy(clock));
    let dt: jiff::civil::DateTime = text
        .parse()
        .map_err(|e| ParseError(format!("bad time {text:?}: {e}")))?;
    let ts = jiff::tz::TimeZone::UTC
        .to_timestamp(dt)
        .map_err(|e| ParseError(format!("bad time {text:?}: {e}")))?;
    // jiff's sub-second part is negative before 1970; ours never is.
    let (sec, nsec) = (ts.as_second(), ts.subsec_nanosecond());
    Ok(if nsec < 0 {
        Timestamp {
            sec: sec - 1,
            nsec: (nsec + 1_000_000_000) as u32,
        }
    } else {
        Timestamp { sec, nsec: nsec as u32 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_records() {
        let line = b"72733306044 1910420955 7  -rwsr-x--T%2012%201000%20100%202%202018-05-22%2023%3A01%3A39.727768%202018-05-23%2001%3A00%3A00.000001 -- %2Fgpfs%2Fa%0Ab%FF%20c";
        let r = parse_list_line(line).unwrap();
        assert_eq!(r.ino, 72733306044);
        assert_eq!(r.generation, 1910420955);
        assert_eq!(r.snap_id, 7);
        assert_eq!(r.mode, libc::S_IFREG | 0o5750);
        assert_eq!((r.size, r.uid, r.gid, r.nlink), (12, 1000, 100, 2));
        assert_eq!(
            r.mtime,
            Timestamp {
                sec: 1527030099,
                nsec: 727768000
            }
        );
        assert_eq!(r.path, b"/gpfs/a\nb\xff c");
        // Before 1970 the nanoseconds stay positive (found by fuzzing).
        assert_eq!(
            parse_time(b"1969-12-31", b"23:59:59.5").unwrap(),
            Timestamp {
                sec: -1,
                nsec: 500_000_000
            }
        );
        for bad in [
            &b"1 2 3 -- /x"[..],
            b"1 2 3  %ZZ -- %2F",
            b"1 2 3  -rw-r--r--%201%202%203%204%202018-05-22%2023%3A01%3A39%202018-05-22%2023%3A01%3A39 -- x",
            b"x 2 3  -rw-r--r--%201%202%203%204%202018-05-22%2023%3A01%3A39%202018-05-22%2023%3A01%3A39 -- %2F",
        ] {
            assert!(parse_list_line(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn parses_modes() {
        assert_eq!(parse_mode(b"drwxr-xr-x").unwrap(), libc::S_IFDIR | 0o755);
        assert_eq!(parse_mode(b"lrwxrwxrwx").unwrap(), libc::S_IFLNK | 0o777);
        assert_eq!(parse_mode(b"-rwSr-sr-t").unwrap(), libc::S_IFREG | 0o7655);
        assert!(parse_mode(b"qrwxr-xr-x").is_err());
        assert!(parse_mode(b"-rwxr-xr-").is_err());
    }

    #[test]
    fn parses_y_tables() {
        let out = b"mmlssnapshot::HEADER:version:reserved:reserved:filesystemName:directory:snapID:status:created:quotas:data:metadata:fileset:snapType:\nmmlssnapshot::0:1:::ess:20201115_PAS1736:16337:Valid:Sun Nov 15 02%3A47%3A48 2020::0:0:PAS1736::\n";
        let rows = parse_y(out, "mmlssnapshot").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["directory"], b"20201115_PAS1736");
        assert_eq!(rows[0]["created"], b"Sun Nov 15 02:47:48 2020");
        assert!(
            parse_y(b"No snapshots in file system gpfs0\n", "mmlssnapshot")
                .unwrap()
                .is_empty()
        );
        assert!(parse_y(b"mmlssnapshot::0:1:::x:\n", "mmlssnapshot").is_err());
    }
}
