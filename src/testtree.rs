//! Generators of large test trees for benchmarks and tests: wide, deep,
//! flat and mixed shapes with a given number of files.

use rayon::prelude::*;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::Path;

/// The shape of a generated tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `files` spread over 10,000 leaf directories under 100 parents.
    Wide,
    /// One chain of 50 nested directories, files spread over the levels.
    Deep,
    /// Every file in one directory.
    Flat,
    /// A bit of everything: wide and deep parts, a big directory, empty
    /// directories, symlinks, varied sizes.
    Mixed,
}

/// A shape name [`Shape`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown shape '{0}' (wide, deep, flat, mixed)")]
pub struct UnknownShape(pub String);

impl std::str::FromStr for Shape {
    type Err = UnknownShape;
    fn from_str(s: &str) -> Result<Shape, UnknownShape> {
        match s {
            "wide" => Ok(Shape::Wide),
            "deep" => Ok(Shape::Deep),
            "flat" => Ok(Shape::Flat),
            "mixed" => Ok(Shape::Mixed),
            _ => Err(UnknownShape(s.to_string())),
        }
    }
}

/// Depth of the [`Shape::Deep`] chain.
pub const DEEP_LEVELS: usize = 50;

/// Creates a tree of `shape` with about `files` files under `root`, which
/// must not exist yet. Each file's first byte is written and the rest of
/// its size is sparse, so big trees are quick to make and take few blocks.
pub fn generate(root: &Path, shape: Shape, files: usize) -> io::Result<()> {
    fs::create_dir(root)?;
    match shape {
        Shape::Wide => wide(root, files, 100, 100),
        Shape::Flat => fill(root, 0, files),
        Shape::Deep => deep(root, files),
        Shape::Mixed => {
            let part = files / 4;
            wide(&root.join("wide"), part, 20, 50)?;
            deep(&root.join("deep"), part)?;
            fs::create_dir(root.join("big"))?;
            fill(&root.join("big"), 0, files - 3 * part)?;
            fs::create_dir(root.join("misc"))?;
            fill(&root.join("misc"), 0, part)?;
            for i in 0..100 {
                fs::create_dir(root.join(format!("empty{i}")))?;
                symlink(format!("misc/f{i}"), root.join(format!("link{i}")))?;
            }
            Ok(())
        }
    }
}

fn wide(root: &Path, files: usize, parents: usize, leaves: usize) -> io::Result<()> {
    if !root.exists() {
        fs::create_dir(root)?;
    }
    let dirs = parents * leaves;
    (0..dirs).into_par_iter().try_for_each(|d| {
        let dir = root
            .join(format!("p{:03}", d / leaves))
            .join(format!("d{:03}", d % leaves));
        fs::create_dir_all(&dir)?;
        let n = files / dirs + usize::from(d < files % dirs);
        fill(&dir, d * 7, n)
    })
}

fn deep(root: &Path, files: usize) -> io::Result<()> {
    let mut dir = root.to_path_buf();
    if !dir.exists() {
        fs::create_dir(&dir)?;
    }
    let mut levels = Vec::new();
    for l in 0..DEEP_LEVELS {
        dir = dir.join(format!("level{l:02}"));
        fs::create_dir(&dir)?;
        levels.push(dir.clone());
    }
    levels.par_iter().enumerate().try_for_each(|(l, d)| {
        let n = files / DEEP_LEVELS + usize::from(l < files % DEEP_LEVELS);
        fill(d, l, n)
    })
}

/// Files of 1 to 8191 bytes whose first byte is written and the rest
/// sparse. Every file holds data, as real files do: a tree of all-sparse
/// files has no extent items at all, which sends btrfs's `send` into a
/// pathological scan (`../shared/reference/snapdiff-change-proportional.md`
/// §1.2) and looks like no real fileset.
fn fill(dir: &Path, seed: usize, n: usize) -> io::Result<()> {
    (0..n).into_par_iter().with_min_len(4096).try_for_each(|i| {
        let mut f = fs::File::create(dir.join(format!("f{i}")))?;
        f.write_all(&[b'a' + (i % 26) as u8])?;
        f.set_len(((i + seed) % 8192).max(1) as u64)
    })
}
