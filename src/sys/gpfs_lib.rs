//! IBM Storage Scale's `libgpfs.so`, loaded at run time with `dlopen`
//! (never linked: ferry must run where GPFS is not installed), with thin
//! safe wrappers for the incremental inode scan of a snapshot and for
//! reading a directory by inode number ("Using APIs to develop backup
//! applications", GPFS programming interfaces).
//!
//! The library is found through `FERRY_LIBGPFS` if set, else
//! `/usr/lpp/mmfs/lib/libgpfs.so`, else `libgpfs.so` through the loader's
//! search path.
//!
//! Layouts and signatures are IBM's `gpfs.h` as vendored by nfs-ganesha
//! (repository nfs-ganesha/nfs-ganesha, path
//! `src/FSAL/FSAL_GPFS/include/gpfs.h`, commit 6fbe0f663e2f); the same
//! `gpfs_iattr64_t` and `gpfs_direntx64_t` appear in later copies of the
//! header, where two reserved bytes of `ia_pad3` got names.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

/// Where IBM installs the library.
const DEFAULT_PATH: &str = "/usr/lpp/mmfs/lib/libgpfs.so";

/// The library cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `dlopen` failed (not installed, or not loadable).
    #[error("cannot load {path}: {why}")]
    Open {
        /// What was tried.
        path: String,
        /// `dlerror()`.
        why: String,
    },
    /// A function ferry needs is missing from it.
    #[error("{path} has no {symbol}")]
    Symbol {
        /// The library.
        path: String,
        /// The missing function.
        symbol: &'static str,
    },
}

/// `gpfs_fssnap_id_t`: an opaque, non-volatile id of a file system and
/// snapshot (`typedef struct gpfs_fssnap_id { char opaque[48]; }`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FssnapId {
    opaque: [c_char; 48],
}

/// `gpfs_timestruc64_t`: `long long tv_sec; unsigned int tv_nsec;`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Timestruc64 {
    tv_sec: i64,
    tv_nsec: u32,
}

/// `gpfs_iattr64_t` (`GPFS_IA64_VERSION` 2 and 3 share this layout).
/// Every field is declared for the layout; ferry reads a few.
#[repr(C)]
#[allow(dead_code)]
struct Iattr64 {
    ia_version: c_int,
    ia_reclen: c_int,
    ia_checksum: c_int,
    ia_mode: u32,
    ia_uid: u64,
    ia_gid: u64,
    ia_inode: u64,
    ia_gen: u64,
    ia_nlink: i64,
    ia_size: i64,
    ia_blocks: i64,
    ia_atime: Timestruc64,
    ia_winflags: u32,
    ia_pad1: u32,
    ia_mtime: Timestruc64,
    ia_flags: u32,
    ia_repl: [u8; 4],
    ia_ctime: Timestruc64,
    ia_blocksize: c_int,
    ia_pad3: u32,
    ia_createtime: Timestruc64,
    ia_mask: u32,
    ia_pad4: c_int,
    ia_reserved: [u32; 4],
    ia_xperm: u32,
    ia_dev: u32,
    ia_rdev: u32,
    ia_pcacheflags: u32,
    ia_modsnapid: u64,
    ia_filesetid: u32,
    ia_datapoolid: u32,
    ia_inode_space_mask: u64,
    ia_dirminsize: i64,
    ia_unused: [u32; 8],
}

const _: () = assert!(std::mem::size_of::<Iattr64>() == 264);
/// The fields read here end with `ia_ctime`: a record at least this long
/// holds them all.
const IATTR_NEEDED: usize = std::mem::offset_of!(Iattr64, ia_blocksize);

/// `gpfs_direntx64_t` (`GPFS_D64_VERSION` 2).
#[repr(C)]
#[allow(dead_code)]
struct Direntx64 {
    d_version: c_int,
    d_reclen: u16,
    d_type: u16,
    d_ino: u64,
    d_gen: u64,
    d_flags: u32,
    d_name: [c_char; 1028],
}

const _: () = assert!(std::mem::size_of::<Direntx64>() == 1056);

/// `GPFS_IAFLAG_DELETED`: "inode has been deleted".
pub const IAFLAG_DELETED: u32 = 0x0080_0000;
/// `GPFS_DE_DIR`: a directory entry of a directory.
pub const DE_DIR: u16 = 4;
/// `GPFS_DE_DEL`: a deleted directory entry.
pub const DE_DEL: u16 = 16;
/// `GPFS_DEFLAG_IJUNCTION`: the entry is the junction of another inode
/// space (an independent fileset linked here).
pub const DEFLAG_IJUNCTION: u32 = 0x0002;

/// A time from an inode: seconds and nanoseconds.
pub type Time = (i64, u32);

/// What ferry reads of an inode (`gpfs_iattr64_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InodeAttr {
    /// `ia_inode`.
    pub ino: u64,
    /// `ia_gen`.
    pub generation: u64,
    /// `ia_mode` (may carry GPFS bits beyond `st_mode`'s).
    pub mode: u32,
    /// `ia_nlink`.
    pub nlink: i64,
    /// `ia_uid`.
    pub uid: u64,
    /// `ia_gid`.
    pub gid: u64,
    /// `ia_size`.
    pub size: i64,
    /// `ia_mtime`.
    pub mtime: Time,
    /// `ia_ctime`.
    pub ctime: Time,
    /// `ia_flags` (`GPFS_IAFLAG_*`).
    pub flags: u32,
}

/// One entry of a directory (`gpfs_direntx64_t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// `d_name`, without its NUL.
    pub name: Vec<u8>,
    /// `d_ino`.
    pub ino: u64,
    /// `d_gen`.
    pub generation: u64,
    /// `d_type` (`GPFS_DE_*`).
    pub kind: u16,
    /// `d_flags` (`GPFS_DEFLAG_*`).
    pub flags: u32,
}

type Handle = c_void;
type Iscan = c_void;
type RawIfile = c_void;

type GetHandleFn = unsafe extern "C" fn(*const c_char) -> *mut Handle;
type FreeHandleFn = unsafe extern "C" fn(*mut Handle);
type GetFssnapIdFn = unsafe extern "C" fn(*mut Handle, *mut FssnapId) -> c_int;
type GetSnapIdFn = unsafe extern "C" fn(*mut Handle) -> u32;
type OpenScanFn = unsafe extern "C" fn(*mut Handle, *const FssnapId, *mut u64) -> *mut Iscan;
type NextInodeFn = unsafe extern "C" fn(*mut Iscan, u64, *mut *const Iattr64) -> c_int;
type SeekInodeFn = unsafe extern "C" fn(*mut Iscan, u64) -> c_int;
type CloseScanFn = unsafe extern "C" fn(*mut Iscan);
type IopenFn = unsafe extern "C" fn(*mut Handle, u64, c_int, *const Iattr64, *const c_char) -> *mut RawIfile;
type IreaddirFn = unsafe extern "C" fn(*mut RawIfile, *mut *const Direntx64) -> c_int;
type IcloseFn = unsafe extern "C" fn(*mut RawIfile);

/// The functions used, by their `gpfs.h` signatures.
struct Fns {
    get_fssnaphandle_by_path: GetHandleFn,
    free_fssnaphandle: FreeHandleFn,
    get_fssnapid_from_fssnaphandle: GetFssnapIdFn,
    get_snapid_from_fssnaphandle: GetSnapIdFn,
    open_inodescan64: OpenScanFn,
    next_inode64: NextInodeFn,
    seek_inode64: SeekInodeFn,
    close_inodescan: CloseScanFn,
    iopen64: IopenFn,
    ireaddir64: IreaddirFn,
    iclose: IcloseFn,
}

/// The loaded library.
pub struct Libgpfs {
    dl: NonNull<c_void>,
    fns: Fns,
    path: String,
}

// SAFETY: the library handle and the function pointers are plain
// addresses, valid until `dlclose` in `Drop`; every object the library
// hands out is owned by one wrapper below, used by one thread at a time.
unsafe impl Send for Libgpfs {}
// SAFETY: as above; `&Libgpfs` only reads the function pointers.
unsafe impl Sync for Libgpfs {}

impl Drop for Libgpfs {
    fn drop(&mut self) {
        // SAFETY: `dl` came from `dlopen`; nothing borrowed from the
        // library outlives `self` (the wrappers borrow it).
        unsafe { libc::dlclose(self.dl.as_ptr()) };
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-NULL, NUL-terminated, valid until the next dl call.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

impl Libgpfs {
    /// Loads the library from `FERRY_LIBGPFS`, IBM's install path, or the
    /// loader's search path, in that order.
    pub fn load() -> Result<Libgpfs, LoadError> {
        let path = match std::env::var_os("FERRY_LIBGPFS") {
            Some(p) => p.as_bytes().to_vec(),
            None if Path::new(DEFAULT_PATH).exists() => DEFAULT_PATH.as_bytes().to_vec(),
            None => b"libgpfs.so".to_vec(),
        };
        Libgpfs::load_from(&path)
    }

    /// Loads the library at `path` (a file name alone goes through the
    /// loader's search path).
    pub fn load_from(path: &[u8]) -> Result<Libgpfs, LoadError> {
        let shown = String::from_utf8_lossy(path).into_owned();
        let c = CString::new(path).map_err(|e| LoadError::Open {
            path: shown.clone(),
            why: e.to_string(),
        })?;
        // SAFETY: a NUL-terminated path; loading runs the library's
        // initialisers, which is what loading IBM's library means.
        let dl = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        let Some(dl) = NonNull::new(dl) else {
            return Err(LoadError::Open {
                path: shown,
                why: dl_error(),
            });
        };
        let sym = |name: &'static str| -> Result<*mut c_void, LoadError> {
            let c = CString::new(name).expect("no NUL in a symbol name");
            // SAFETY: a live handle and a NUL-terminated name.
            let p = unsafe { libc::dlsym(dl.as_ptr(), c.as_ptr()) };
            if p.is_null() {
                Err(LoadError::Symbol {
                    path: shown.clone(),
                    symbol: name,
                })
            } else {
                Ok(p)
            }
        };
        let resolve = || -> Result<Fns, LoadError> {
            // SAFETY (every transmute): the symbol is IBM's function of that
            // name, whose C signature in gpfs.h is the pointer type here.
            unsafe {
                Ok(Fns {
                    get_fssnaphandle_by_path: std::mem::transmute::<*mut c_void, GetHandleFn>(sym(
                        "gpfs_get_fssnaphandle_by_path",
                    )?),
                    free_fssnaphandle: std::mem::transmute::<*mut c_void, FreeHandleFn>(sym("gpfs_free_fssnaphandle")?),
                    get_fssnapid_from_fssnaphandle: std::mem::transmute::<*mut c_void, GetFssnapIdFn>(sym(
                        "gpfs_get_fssnapid_from_fssnaphandle",
                    )?),
                    get_snapid_from_fssnaphandle: std::mem::transmute::<*mut c_void, GetSnapIdFn>(sym(
                        "gpfs_get_snapid_from_fssnaphandle",
                    )?),
                    open_inodescan64: std::mem::transmute::<*mut c_void, OpenScanFn>(sym("gpfs_open_inodescan64")?),
                    next_inode64: std::mem::transmute::<*mut c_void, NextInodeFn>(sym("gpfs_next_inode64")?),
                    seek_inode64: std::mem::transmute::<*mut c_void, SeekInodeFn>(sym("gpfs_seek_inode64")?),
                    close_inodescan: std::mem::transmute::<*mut c_void, CloseScanFn>(sym("gpfs_close_inodescan")?),
                    iopen64: std::mem::transmute::<*mut c_void, IopenFn>(sym("gpfs_iopen64")?),
                    ireaddir64: std::mem::transmute::<*mut c_void, IreaddirFn>(sym("gpfs_ireaddir64")?),
                    iclose: std::mem::transmute::<*mut c_void, IcloseFn>(sym("gpfs_iclose")?),
                })
            }
        };
        match resolve() {
            Ok(fns) => Ok(Libgpfs { dl, fns, path: shown }),
            Err(e) => {
                // SAFETY: nothing was taken from the library.
                unsafe { libc::dlclose(dl.as_ptr()) };
                Err(e)
            }
        }
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `gpfs_get_fssnaphandle_by_path`: the file system and snapshot that
    /// `path` is in (a snapshot's directory names that snapshot).
    pub fn snapshot(&self, path: &Path) -> io::Result<FsSnap<'_>> {
        let c = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path; returns NULL with errno or a
        // handle this wrapper frees.
        let h = unsafe { (self.fns.get_fssnaphandle_by_path)(c.as_ptr()) };
        NonNull::new(h)
            .map(|h| FsSnap { lib: self, h })
            .ok_or_else(io::Error::last_os_error)
    }
}

/// A file system and snapshot handle (`gpfs_fssnap_handle_t`), freed on
/// drop.
pub struct FsSnap<'a> {
    lib: &'a Libgpfs,
    h: NonNull<Handle>,
}

impl Drop for FsSnap<'_> {
    fn drop(&mut self) {
        // SAFETY: a handle from gpfs_get_fssnaphandle_by_path, freed once.
        unsafe { (self.lib.fns.free_fssnaphandle)(self.h.as_ptr()) };
    }
}

impl<'a> FsSnap<'a> {
    /// `gpfs_get_fssnapid_from_fssnaphandle`: the snapshot's non-volatile
    /// id, for a later incremental scan.
    pub fn fssnap_id(&self) -> io::Result<FssnapId> {
        let mut id = FssnapId { opaque: [0; 48] };
        // SAFETY: a live handle and a buffer of the documented size.
        if unsafe { (self.lib.fns.get_fssnapid_from_fssnaphandle)(self.h.as_ptr(), &mut id) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(id)
    }

    /// `gpfs_get_snapid_from_fssnaphandle`: the snapshot's numeric id (0
    /// when the handle is the active file system's).
    pub fn snap_id(&self) -> io::Result<u64> {
        // SAFETY: a live handle.
        match unsafe { (self.lib.fns.get_snapid_from_fssnaphandle)(self.h.as_ptr()) } {
            u32::MAX => Err(io::Error::last_os_error()),
            id => Ok(u64::from(id)),
        }
    }

    /// `gpfs_open_inodescan64`: a scan of the snapshot's inodes, only
    /// those changed since snapshot `prev` when given. Also returns the
    /// highest inode number of the inode file.
    pub fn inode_scan(&self, prev: Option<&FssnapId>) -> io::Result<(InodeScan<'a>, u64)> {
        let mut max_ino = 0u64;
        let prev = prev.map_or(std::ptr::null(), |p| p as *const FssnapId);
        // SAFETY: a live handle, a valid or NULL id, a place for maxIno.
        let s = unsafe { (self.lib.fns.open_inodescan64)(self.h.as_ptr(), prev, &mut max_ino) };
        let s = NonNull::new(s).ok_or_else(io::Error::last_os_error)?;
        Ok((InodeScan { lib: self.lib, s }, max_ino))
    }

    /// `gpfs_iopen64` and `gpfs_ireaddir64`: the entries of directory
    /// `ino` in this snapshot.
    pub fn read_dir(&self, ino: u64) -> io::Result<Vec<DirEntry>> {
        // SAFETY: a live handle; no attributes or link text (not creating).
        let f =
            unsafe { (self.lib.fns.iopen64)(self.h.as_ptr(), ino, libc::O_RDONLY, std::ptr::null(), std::ptr::null()) };
        let f = NonNull::new(f).ok_or_else(io::Error::last_os_error)?;
        let file = Ifile { lib: self.lib, f };
        let mut out = Vec::new();
        loop {
            let mut d: *const Direntx64 = std::ptr::null();
            // SAFETY: an open ifile and a place for the entry pointer.
            if unsafe { (self.lib.fns.ireaddir64)(file.f.as_ptr(), &mut d) } != 0 {
                return Err(io::Error::last_os_error());
            }
            if d.is_null() {
                return Ok(out);
            }
            // SAFETY: non-NULL: the library's entry, valid until the next
            // call on this ifile.
            let d = unsafe { &*d };
            let max =
                (usize::from(d.d_reclen).saturating_sub(std::mem::offset_of!(Direntx64, d_name))).min(d.d_name.len());
            let name: Vec<u8> = d.d_name[..max]
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            out.push(DirEntry {
                name,
                ino: d.d_ino,
                generation: d.d_gen,
                kind: d.d_type,
                flags: d.d_flags,
            });
        }
    }
}

/// An open inode (`gpfs_ifile_t`), closed on drop.
struct Ifile<'a> {
    lib: &'a Libgpfs,
    f: NonNull<RawIfile>,
}

impl Drop for Ifile<'_> {
    fn drop(&mut self) {
        // SAFETY: an ifile from gpfs_iopen64, closed once.
        unsafe { (self.lib.fns.iclose)(self.f.as_ptr()) };
    }
}

/// An inode scan (`gpfs_iscan_t`), closed on drop. It may move to another
/// thread (each scan of a range runs on its own).
pub struct InodeScan<'a> {
    lib: &'a Libgpfs,
    s: NonNull<Iscan>,
}

// SAFETY: the scan is only used through `&mut self`, by one thread at a
// time; gpfs.h partitions scans with termIno so that they run apart.
unsafe impl Send for InodeScan<'_> {}

impl Drop for InodeScan<'_> {
    fn drop(&mut self) {
        // SAFETY: a scan from gpfs_open_inodescan64, closed once.
        unsafe { (self.lib.fns.close_inodescan)(self.s.as_ptr()) };
    }
}

impl InodeScan<'_> {
    /// `gpfs_seek_inode64`: the next inode returned is the first at or
    /// after `ino`.
    pub fn seek(&mut self, ino: u64) -> io::Result<()> {
        // SAFETY: a live scan.
        if unsafe { (self.lib.fns.seek_inode64)(self.s.as_ptr(), ino) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `gpfs_next_inode64`: the next inode before `term` (0: up to the
    /// end), or `None` at the end.
    pub fn next_inode(&mut self, term: u64) -> io::Result<Option<InodeAttr>> {
        let mut a: *const Iattr64 = std::ptr::null();
        // SAFETY: a live scan and a place for the attribute pointer.
        if unsafe { (self.lib.fns.next_inode64)(self.s.as_ptr(), term, &mut a) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if a.is_null() {
            return Ok(None);
        }
        // SAFETY: non-NULL: the library's record, valid until the next
        // call on this scan; `ia_reclen` is checked before any field past
        // the header is read.
        let a = unsafe { &*a };
        if usize::try_from(a.ia_reclen).is_ok_and(|n| n < IATTR_NEEDED) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "gpfs_next_inode64: iattr record of {} bytes, fewer than needed",
                    a.ia_reclen
                ),
            ));
        }
        Ok(Some(InodeAttr {
            ino: a.ia_inode,
            generation: a.ia_gen,
            mode: a.ia_mode,
            nlink: a.ia_nlink,
            uid: a.ia_uid,
            gid: a.ia_gid,
            size: a.ia_size,
            mtime: (a.ia_mtime.tv_sec, a.ia_mtime.tv_nsec),
            ctime: (a.ia_ctime.tv_sec, a.ia_ctime.tv_nsec),
            flags: a.ia_flags,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_gpfs_h() {
        assert_eq!(std::mem::offset_of!(Iattr64, ia_inode), 32);
        assert_eq!(std::mem::offset_of!(Iattr64, ia_mtime), 96);
        assert_eq!(std::mem::offset_of!(Iattr64, ia_flags), 112);
        assert_eq!(std::mem::offset_of!(Iattr64, ia_ctime), 120);
        assert_eq!(std::mem::offset_of!(Iattr64, ia_xperm), 184);
        assert_eq!(std::mem::offset_of!(Iattr64, ia_modsnapid), 200);
        assert_eq!(std::mem::offset_of!(Direntx64, d_ino), 8);
        assert_eq!(std::mem::offset_of!(Direntx64, d_name), 28);
    }

    #[test]
    fn a_missing_library_says_why() {
        let e = Libgpfs::load_from(b"/nonexistent/libgpfs.so").err().unwrap();
        assert!(e.to_string().contains("/nonexistent/libgpfs.so"), "{e}");
    }
}
