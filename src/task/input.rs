//! Where the paths of an operation come from on the command line: the
//! arguments, then path lists (stdin or files) in NUL-separated raw form
//! (`find -print0`, `ferry scan -0`) or JSON lines (`ferry scan`,
//! `ferry snapdiff`), where each line is a path object, a JSON string, or
//! a plain path (which cannot hold a newline). Moves take SOURCE DEST
//! pairs.
//!
//! Relative paths are made absolute against the working directory, since
//! object keys and locks are derived from absolute paths; entries that are
//! object keys (an import's) are kept as given.

use super::{PathObject, PathObjectError};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// How a path list is separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// Raw bytes, each path ended by NUL.
    Nul,
    /// One path object, JSON string or plain path per line.
    JsonLines,
}

/// Why one path cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// No Linux path is empty or holds a NUL byte.
    #[error("empty path, or a path with a NUL byte")]
    Invalid,
    /// Without resolving symlinks, `..` is ambiguous.
    #[error("{0}: '..' components are not accepted; give the path without them")]
    DotDot(String),
    /// A JSON line that is not a path object.
    #[error("{0}")]
    Object(#[from] PathObjectError),
    /// A NUL list whose last source has no destination.
    #[error("the NUL list ends with a source that has no destination")]
    Unpaired,
}

/// Why paths could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// One entry of a list (or one argument) is not a valid path; reading
    /// goes on after it.
    #[error("{source_name}: entry {index}: {reason}")]
    Entry {
        /// The list's name (a file name, `stdin`, or `arguments`).
        source_name: String,
        /// 1-based entry (line) number.
        index: u64,
        /// What is wrong.
        reason: PathError,
    },
    /// Nothing to work on.
    #[error("no paths given (give PATHs, `-` to read a list from stdin, or --from FILE)")]
    NoPaths,
    /// An odd number of SOURCE DEST arguments.
    #[error("paths come in SOURCE DEST pairs; the last source has no destination")]
    Unpaired,
    /// A list could not be opened or read.
    #[error("cannot read {name}: {source}")]
    Read {
        /// The list's name.
        name: String,
        /// The I/O error.
        source: io::Error,
    },
}

/// Reads path objects one at a time from a path list.
pub struct PathReader<R> {
    reader: R,
    format: InputFormat,
    name: String,
    index: u64,
    cwd: Vec<u8>,
    buf: Vec<u8>,
    /// Entries are object keys, kept as given.
    keys: bool,
}

impl<R: BufRead> PathReader<R> {
    /// Reads `reader` (called `name` in errors) in `format`.
    pub fn new(reader: R, format: InputFormat, name: &str) -> io::Result<PathReader<R>> {
        Ok(PathReader {
            reader,
            format,
            name: name.to_string(),
            index: 0,
            cwd: current_dir()?,
            buf: Vec::new(),
            keys: false,
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
                        PathObject::parse(line).map_err(PathError::from)
                    } else {
                        Ok(PathObject::new(line.to_vec()))
                    }
                }
            };
            let entry = entry.and_then(|mut obj| {
                if self.keys {
                    return Ok(obj);
                }
                obj.path = absolute(&self.cwd, &obj.path)?;
                if let Some(src) = &obj.source {
                    obj.source = Some(absolute(&self.cwd, src)?);
                }
                Ok(obj)
            });
            return Ok(Some(entry.map_err(|reason| self.entry_error(reason))));
        }
    }

    fn entry_error(&self, reason: PathError) -> InputError {
        InputError::Entry {
            source_name: self.name.clone(),
            index: self.index,
            reason,
        }
    }
}

fn current_dir() -> io::Result<Vec<u8>> {
    Ok(std::env::current_dir()?.as_os_str().as_bytes().to_vec())
}

/// `path` made absolute against `cwd`, with `.` components and repeated or
/// trailing slashes removed. A `..` component is refused: without resolving
/// symlinks its meaning is ambiguous.
pub fn absolute(cwd: &[u8], path: &[u8]) -> Result<Vec<u8>, PathError> {
    if path.is_empty() || path.contains(&0) {
        return Err(PathError::Invalid);
    }
    let mut out = if path.starts_with(b"/") {
        Vec::new()
    } else {
        cwd.to_vec()
    };
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(PathError::DotDot(String::from_utf8_lossy(path).into_owned())),
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

/// The paths of one command: its arguments, then any path lists, in order.
/// Entries that are not valid paths are handed to the caller's `bad`
/// callback and skipped, so one bad line never stops a run.
pub struct Inputs {
    args: std::vec::IntoIter<Vec<u8>>,
    arg_index: u64,
    lists: Vec<(String, Box<dyn BufRead>)>,
    current: Option<PathReader<Box<dyn BufRead>>>,
    format: InputFormat,
    cwd: Vec<u8>,
    /// Entries are SOURCE DEST pairs (moves): arguments always, NUL lists
    /// alternate.
    pairs: bool,
    /// A source read from a NUL list, waiting for its destination.
    pending_source: Option<Vec<u8>>,
    /// Entries are object keys, kept as given.
    keys: bool,
}

/// What a command was given to read paths from.
#[derive(Clone, Debug, Default)]
pub struct InputSpec {
    /// Paths given as arguments; `-` reads a list from stdin.
    pub paths: Vec<OsString>,
    /// A list file (`-` for stdin).
    pub from: Option<PathBuf>,
    /// Lists are NUL-separated raw paths, not JSON lines.
    pub null: bool,
    /// Entries are SOURCE DEST pairs (moves).
    pub pairs: bool,
    /// Entries are object keys (imports), kept as given rather than made
    /// absolute paths.
    pub keys: bool,
}

impl Inputs {
    /// Opens what `spec` names.
    pub fn open(spec: &InputSpec) -> Result<Inputs, InputError> {
        let mut lists: Vec<(String, Box<dyn BufRead>)> = Vec::new();
        let mut args = Vec::new();
        let stdin = || -> (String, Box<dyn BufRead>) { ("stdin".into(), Box::new(BufReader::new(io::stdin()))) };
        for p in &spec.paths {
            if p == "-" {
                lists.push(stdin());
            } else {
                args.push(p.as_bytes().to_vec());
            }
        }
        match spec.from.as_deref() {
            Some(p) if p.as_os_str() == "-" => lists.push(stdin()),
            Some(p) => {
                let name = p.display().to_string();
                let f = File::open(p).map_err(|source| InputError::Read {
                    name: name.clone(),
                    source,
                })?;
                lists.push((name, Box::new(BufReader::with_capacity(1 << 16, f))));
            }
            None => {}
        }
        if spec.pairs && args.len() % 2 == 1 {
            return Err(InputError::Unpaired);
        }
        if args.is_empty() && lists.is_empty() {
            return Err(InputError::NoPaths);
        }
        let cwd = current_dir().map_err(|source| InputError::Read {
            name: "the working directory".into(),
            source,
        })?;
        Ok(Inputs {
            args: args.into_iter(),
            arg_index: 0,
            lists,
            current: None,
            format: if spec.null {
                InputFormat::Nul
            } else {
                InputFormat::JsonLines
            },
            cwd,
            pairs: spec.pairs,
            pending_source: None,
            keys: spec.keys,
        })
    }

    /// Up to `n` more paths; entries that are not valid paths go to `bad`.
    /// An empty batch means the end.
    pub fn next_batch(&mut self, n: usize, bad: &mut dyn FnMut(InputError)) -> Result<Vec<PathObject>, InputError> {
        let mut out = Vec::with_capacity(n.min(4096));
        while out.len() < n {
            if let Some(p) = self.args.next() {
                match self.argument(p) {
                    Ok(o) => out.push(o),
                    Err((index, reason)) => bad(InputError::Entry {
                        source_name: "arguments".into(),
                        index,
                        reason,
                    }),
                }
                continue;
            }
            if self.current.is_none() {
                if self.lists.is_empty() {
                    break;
                }
                let (name, reader) = self.lists.remove(0);
                let mut reader =
                    PathReader::new(reader, self.format, &name).map_err(|source| InputError::Read { name, source })?;
                reader.keys = self.keys;
                self.current = Some(reader);
            }
            let reader = self.current.as_mut().expect("set above");
            let entry = reader.next_entry().map_err(|source| InputError::Read {
                name: reader.name.clone(),
                source,
            })?;
            match entry {
                Some(Ok(obj)) if self.pairs && self.format == InputFormat::Nul => match self.pending_source.take() {
                    None => self.pending_source = Some(obj.path),
                    Some(src) => {
                        let mut o = obj;
                        o.source = Some(src);
                        out.push(o);
                    }
                },
                Some(Ok(obj)) => out.push(obj),
                Some(Err(e)) => bad(e),
                None => {
                    let done = self.current.take().expect("set above");
                    if self.pending_source.take().is_some() {
                        bad(done.entry_error(PathError::Unpaired));
                    }
                }
            }
        }
        Ok(out)
    }

    /// One argument (with its destination, for pairs) as a path object;
    /// an error names the argument at fault by its position (from 1).
    fn argument(&mut self, p: Vec<u8>) -> Result<PathObject, (u64, PathError)> {
        self.arg_index += 1;
        let at = self.arg_index;
        // A pair is taken whole, so one bad half never shifts the pairing.
        let dst = if self.pairs { self.args.next() } else { None };
        if dst.is_some() {
            self.arg_index += 1;
        }
        if self.keys {
            return Ok(PathObject::new(p));
        }
        let path = absolute(&self.cwd, &p).map_err(|e| (at, e))?;
        let Some(dst) = dst else {
            return Ok(PathObject::new(path));
        };
        let mut o = PathObject::new(absolute(&self.cwd, &dst).map_err(|e| (at + 1, e))?);
        o.source = Some(path);
        Ok(o)
    }
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

    #[test]
    fn pairs_from_arguments_and_bad_entries_reported() {
        let spec = InputSpec {
            paths: vec![
                "/a".into(),
                "/b".into(),
                "/c/../d".into(),
                "/e".into(),
                "/f".into(),
                "/g/..".into(),
            ],
            pairs: true,
            ..InputSpec::default()
        };
        let mut inputs = Inputs::open(&spec).unwrap();
        let mut bad = Vec::new();
        let got = inputs.next_batch(10, &mut |e| bad.push(e.to_string())).unwrap();
        // Only the first pair is good; a bad half drops its whole pair.
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].source.as_deref(), Some(&b"/a"[..]));
        assert_eq!(got[0].path, b"/b");
        // A bad source and a bad destination, each named by its position.
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("arguments: entry 3: /c/../d"), "{bad:?}");
        assert!(bad[1].starts_with("arguments: entry 6: /g/.."), "{bad:?}");
        let odd = InputSpec {
            paths: vec!["/a".into()],
            pairs: true,
            ..InputSpec::default()
        };
        assert!(matches!(Inputs::open(&odd), Err(InputError::Unpaired)));
        assert!(matches!(Inputs::open(&InputSpec::default()), Err(InputError::NoPaths)));
    }
}
