//! Reading path lists for operations from the shell: NUL-separated raw
//! paths (`find -print0`, `ferry scan -0`) or JSON lines (`ferry scan`,
//! `ferry snapdiff`), where each line is a path object, a JSON string, or
//! a plain path (which cannot hold a newline).
//!
//! Relative paths are made absolute against the working directory, since
//! object keys and locks are derived from absolute paths.

use super::PathObject;
use std::io::{self, BufRead};
use std::os::unix::ffi::OsStrExt;

/// How a path list is separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// Raw bytes, each path ended by NUL.
    Nul,
    /// One path object, JSON string or plain path per line.
    JsonLines,
}

/// A bad entry in a path list, with where it was.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: entry {index}: {message}")]
pub struct InputError {
    /// The list's name (a file name, or `stdin`).
    pub source_name: String,
    /// 1-based entry (line) number.
    pub index: u64,
    /// What is wrong.
    pub message: String,
}

/// Reads path objects one at a time from a path list.
pub struct PathReader<R> {
    reader: R,
    format: InputFormat,
    name: String,
    index: u64,
    cwd: Vec<u8>,
    buf: Vec<u8>,
}

impl<R: BufRead> PathReader<R> {
    /// Reads `reader` (called `name` in errors) in `format`.
    pub fn new(reader: R, format: InputFormat, name: &str) -> io::Result<PathReader<R>> {
        Ok(PathReader {
            reader,
            format,
            name: name.to_string(),
            index: 0,
            cwd: std::env::current_dir()?.as_os_str().as_bytes().to_vec(),
            buf: Vec::new(),
        })
    }

    /// The next entry: `None` at the end, `Some(Err)` for an entry that is
    /// not a valid path (reading goes on after it), and an I/O error as an
    /// error for the list as a whole.
    pub fn next_entry(&mut self) -> io::Result<Option<Result<PathObject, InputError>>> {
        loop {
            self.buf.clear();
            let sep = if self.format == InputFormat::Nul { 0 } else { b'\n' };
            if self.reader.read_until(sep, &mut self.buf)? == 0 {
                return Ok(None);
            }
            self.index += 1;
            if self.buf.last() == Some(&sep) {
                self.buf.pop();
            }
            let entry = match self.format {
                InputFormat::Nul if self.buf.is_empty() => continue,
                InputFormat::Nul => Ok(PathObject::new(self.buf.clone())),
                InputFormat::JsonLines => {
                    let line = self.buf.trim_ascii();
                    if line.is_empty() {
                        continue;
                    }
                    if line.starts_with(b"{") || line.starts_with(b"\"") {
                        PathObject::parse(line).map_err(|e| e.to_string())
                    } else {
                        Ok(PathObject::new(line.to_vec()))
                    }
                }
            };
            let entry = entry.and_then(|mut obj| {
                obj.path = absolute(&self.cwd, &obj.path)?;
                if let Some(src) = &obj.source {
                    obj.source = Some(absolute(&self.cwd, src)?);
                }
                Ok(obj)
            });
            return Ok(Some(entry.map_err(|message| InputError {
                source_name: self.name.clone(),
                index: self.index,
                message,
            })));
        }
    }
}

/// `path` made absolute against `cwd`, with `.` components and repeated or
/// trailing slashes removed. A `..` component is refused: without resolving
/// symlinks its meaning is ambiguous.
pub fn absolute(cwd: &[u8], path: &[u8]) -> Result<Vec<u8>, String> {
    if path.is_empty() || path.contains(&0) {
        return Err("empty path, or a path with a NUL byte".into());
    }
    let mut out = if path.starts_with(b"/") {
        Vec::new()
    } else {
        cwd.to_vec()
    };
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(format!(
                    "{}: '..' components are not accepted; give the path without them",
                    String::from_utf8_lossy(path)
                ));
            }
            p => {
                if out.last() != Some(&b'/') {
                    out.push(b'/');
                }
                out.extend_from_slice(p);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], format: InputFormat) -> Vec<Result<Vec<u8>, String>> {
        let mut r = PathReader::new(input, format, "t").unwrap();
        let mut out = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            out.push(e.map(|o| o.path).map_err(|e| e.to_string()));
        }
        out
    }

    #[test]
    fn json_lines_accept_objects_strings_and_plain_paths() {
        let got = read_all(
            b"{\"path\":\"/a\\nb\",\"size\":1}\n\"/c\\udcff\"\n/plain path\n\n{\"nopath\":1}\n/x/../y\n",
            InputFormat::JsonLines,
        );
        assert_eq!(got[0], Ok(b"/a\nb".to_vec()));
        assert_eq!(got[1], Ok(b"/c\xff".to_vec()));
        assert_eq!(got[2], Ok(b"/plain path".to_vec()));
        assert!(got[3].as_ref().unwrap_err().starts_with("t: entry 5: "));
        assert!(got[4].as_ref().unwrap_err().contains("'..'"));
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn nul_lists_carry_any_bytes() {
        let got = read_all(b"/a\nb\0/c\xff\0\0/d", InputFormat::Nul);
        assert_eq!(
            got,
            vec![Ok(b"/a\nb".to_vec()), Ok(b"/c\xff".to_vec()), Ok(b"/d".to_vec())]
        );
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(absolute(b"/w", b"a//b/./c/").unwrap(), b"/w/a/b/c");
        assert_eq!(absolute(b"/w", b"/").unwrap(), b"/");
        assert_eq!(absolute(b"/", b"x").unwrap(), b"/x");
        assert!(absolute(b"/w", b"").is_err());
    }
}
