/*
 * A fake of IBM Storage Scale's libgpfs.so for ferry's tests: the
 * incremental inode scan and the read of directories by inode number, on
 * the btrfs subvolumes that tests/fake-mm serves as GPFS filesets.
 * README.md in this directory is the contract.
 *
 * Build: cc -shared -fPIC -O2 -Wall -Werror -o libgpfs.so fakegpfs.c
 *
 * Layouts: IBM's gpfs.h as vendored by nfs-ganesha
 * (nfs-ganesha/nfs-ganesha, src/FSAL/FSAL_GPFS/include/gpfs.h, commit
 * 6fbe0f663e2f); only what the fake implements is declared.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/btrfs.h>
#include <linux/fs.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- gpfs.h ---------------------------------------------------------- */

typedef struct gpfs_timestruc64 {
  long long tv_sec;
  unsigned int tv_nsec;
} gpfs_timestruc64_t;

typedef struct gpfs_iattr64 {
  int ia_version;
  int ia_reclen;
  int ia_checksum;
  unsigned int ia_mode;
  unsigned long long ia_uid;
  unsigned long long ia_gid;
  unsigned long long ia_inode;
  unsigned long long ia_gen;
  long long ia_nlink;
  long long ia_size;
  long long ia_blocks;
  gpfs_timestruc64_t ia_atime;
  unsigned int ia_winflags;
  unsigned int ia_pad1;
  gpfs_timestruc64_t ia_mtime;
  unsigned int ia_flags;
  unsigned char ia_repl_data, ia_repl_data_max, ia_repl_meta, ia_repl_meta_max;
  gpfs_timestruc64_t ia_ctime;
  int ia_blocksize;
  unsigned int ia_pad3;
  gpfs_timestruc64_t ia_createtime;
  unsigned int ia_mask;
  int ia_pad4;
  unsigned int ia_reserved[4];
  unsigned int ia_xperm;
  unsigned int ia_dev;
  unsigned int ia_rdev;
  unsigned int ia_pcacheflags;
  unsigned long long ia_modsnapid;
  unsigned int ia_filesetid;
  unsigned int ia_datapoolid;
  unsigned long long ia_inode_space_mask;
  long long ia_dirminsize;
  unsigned int ia_unused[8];
} gpfs_iattr64_t;
_Static_assert(sizeof(gpfs_iattr64_t) == 264, "gpfs_iattr64_t layout");

typedef struct gpfs_direntx64 {
  int d_version;
  unsigned short d_reclen;
  unsigned short d_type;
  unsigned long long d_ino;
  unsigned long long d_gen;
  unsigned int d_flags;
  char d_name[1028];
} gpfs_direntx64_t;
_Static_assert(sizeof(gpfs_direntx64_t) == 1056, "gpfs_direntx64_t layout");

typedef struct gpfs_fssnap_id {
  char opaque[48];
} gpfs_fssnap_id_t;

#define GPFS_IA64_VERSION 2
#define GPFS_D64_VERSION 2
#define GPFS_DE_OTHER 0
#define GPFS_DE_FIFO 1
#define GPFS_DE_CHR 2
#define GPFS_DE_DIR 4
#define GPFS_DE_BLK 6
#define GPFS_DE_REG 8
#define GPFS_DE_LNK 10
#define GPFS_DE_SOCK 12
#define GPFS_DEFLAG_IJUNCTION 0x0002
#define GPFS_IAFLAG_FILESET_ROOT 0x0010
#define GPFS_IAFLAG_DELETED 0x00800000
#define GPFS_E_INVAL_FSSNAPID 190
#define GPFS_E_INVAL_ISCAN 191
#define GPFS_E_INVAL_IFILE 192
#define GPFS_E_INVAL_FSSNAPHANDLE 195

/* ---- the fake --------------------------------------------------------- */

#define SUBVOL_ROOT_INO 256
#define EMPTY_SUBVOL_DIR_INO 2
static const char MAGIC[8] = "FAKEGPFS";

/* FAKE_GPFS_FAIL="gpfs_open_inodescan64:38,...": that call fails with that
   errno (every time). */
static int fail(const char *fn) {
  const char *spec = getenv("FAKE_GPFS_FAIL");
  size_t n = strlen(fn);
  while (spec && *spec) {
    if (strncmp(spec, fn, n) == 0 && spec[n] == ':') {
      errno = atoi(spec + n + 1);
      return 1;
    }
    spec = strchr(spec, ',');
    if (spec)
      spec++;
  }
  return 0;
}

struct ent {
  unsigned long long ino, gen;
  struct stat st;
  char *path;
};

struct gpfs_fssnap_handle {
  char *root;            /* the snapshot's directory, or the junction */
  char *snapdir;         /* the .snapshots directory holding it, or NULL */
  unsigned long long subvol, otransid;
  dev_t dev;
  struct ent *ents;      /* one per inode, by inode number */
  size_t n, cap;
};
typedef struct gpfs_fssnap_handle gpfs_fssnap_handle_t;

struct gpfs_iscan {
  gpfs_iattr64_t *attrs; /* what the scan returns, by inode number */
  size_t n, pos;
};
typedef struct gpfs_iscan gpfs_iscan_t;

struct gpfs_ifile {
  gpfs_fssnap_handle_t *h;
  struct ent *e;
  DIR *dir;
  gpfs_direntx64_t de;
};
typedef struct gpfs_ifile gpfs_ifile_t;

/* i_generation (FS_IOC_GETVERSION) of regular files and directories, 0 for
   the rest: what tests/fake-mm's mmapplypolicy reports. */
static unsigned long long generation(const char *path, const struct stat *st) {
  if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode))
    return 0;
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  long v = 0;
  if (ioctl(fd, FS_IOC_GETVERSION, &v) != 0)
    v = 0;
  close(fd);
  return (unsigned int)v;
}

/* Another inode space: a nested subvolume (its root, or the empty
   directory standing for it in a snapshot). */
static int other_space(const struct stat *st, dev_t dev) {
  return S_ISDIR(st->st_mode) &&
         (st->st_ino == SUBVOL_ROOT_INO || st->st_ino == EMPTY_SUBVOL_DIR_INO || st->st_dev != dev);
}

static int add(gpfs_fssnap_handle_t *h, const char *path, const struct stat *st) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 256;
    struct ent *e = realloc(h->ents, cap * sizeof *e);
    if (!e)
      return -1;
    h->ents = e;
    h->cap = cap;
  }
  struct ent *e = &h->ents[h->n];
  e->ino = st->st_ino;
  e->st = *st;
  e->gen = generation(path, st);
  e->path = strdup(path);
  if (!e->path)
    return -1;
  h->n++;
  return 0;
}

/* Everything under `dir` in the same inode space, `.snapshots` of the
   root left out (GPFS hides it). */
static int walk(gpfs_fssnap_handle_t *h, const char *dir, int is_root) {
  DIR *d = opendir(dir);
  if (!d)
    return -1;
  struct dirent *de;
  int rc = 0;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
      continue;
    if (is_root && !strcmp(de->d_name, ".snapshots"))
      continue;
    char *p;
    if (asprintf(&p, "%s/%s", dir, de->d_name) < 0) {
      rc = -1;
      break;
    }
    struct stat st;
    if (lstat(p, &st) != 0 || other_space(&st, h->dev)) {
      free(p);
      continue;
    }
    rc = add(h, p, &st);
    if (rc == 0 && S_ISDIR(st.st_mode))
      rc = walk(h, p, 0);
    free(p);
  }
  closedir(d);
  return rc;
}

static int by_ino(const void *a, const void *b) {
  const struct ent *x = a, *y = b;
  return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static struct ent *find(gpfs_fssnap_handle_t *h, unsigned long long ino) {
  struct ent key = {.ino = ino};
  return bsearch(&key, h->ents, h->n, sizeof *h->ents, by_ino);
}

static void free_handle(gpfs_fssnap_handle_t *h) {
  if (!h)
    return;
  for (size_t i = 0; i < h->n; i++)
    free(h->ents[i].path);
  free(h->ents);
  free(h->root);
  free(h->snapdir);
  free(h);
}

/* A handle on the snapshot or subvolume whose root is `root`. */
static gpfs_fssnap_handle_t *open_root(const char *root, const char *snapdir) {
  gpfs_fssnap_handle_t *h = calloc(1, sizeof *h);
  if (!h)
    return NULL;
  h->root = strdup(root);
  h->snapdir = snapdir ? strdup(snapdir) : NULL;
  struct stat st;
  int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    free_handle(h);
    errno = e;
    return NULL;
  }
  struct btrfs_ioctl_get_subvol_info_args info;
  memset(&info, 0, sizeof info);
  if (ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &info) < 0) {
    close(fd);
    free_handle(h);
    errno = EINVAL; /* "Not a GPFS file" */
    return NULL;
  }
  close(fd);
  h->subvol = info.treeid;
  h->otransid = info.otransid;
  h->dev = st.st_dev;
  if (add(h, root, &st) != 0 || walk(h, root, 1) != 0) {
    int e = errno;
    free_handle(h);
    errno = e;
    return NULL;
  }
  qsort(h->ents, h->n, sizeof *h->ents, by_ino);
  /* One entry per inode: hard links were met once per link. */
  size_t w = 0;
  for (size_t i = 0; i < h->n; i++) {
    if (w > 0 && h->ents[w - 1].ino == h->ents[i].ino) {
      free(h->ents[i].path);
      continue;
    }
    h->ents[w++] = h->ents[i];
  }
  h->n = w;
  return h;
}

gpfs_fssnap_handle_t *gpfs_get_fssnaphandle_by_path(const char *pathName) {
  if (fail("gpfs_get_fssnaphandle_by_path"))
    return NULL;
  char real[PATH_MAX];
  if (!pathName || !realpath(pathName, real))
    return NULL;
  /* <junction>/.snapshots/<name>[/...]: that snapshot. */
  char *s = strstr(real, "/.snapshots/");
  if (s) {
    char *name = s + strlen("/.snapshots/");
    char *end = strchr(name, '/');
    if (end)
      *end = 0;
    char snapdir[PATH_MAX];
    snprintf(snapdir, sizeof snapdir, "%.*s", (int)(name - 1 - real), real);
    return open_root(real, snapdir);
  }
  /* Otherwise the active file system: the subvolume holding the path. */
  for (;;) {
    struct stat st;
    if (lstat(real, &st) != 0)
      return NULL;
    if (S_ISDIR(st.st_mode) && st.st_ino == SUBVOL_ROOT_INO)
      return open_root(real, NULL);
    char *slash = strrchr(real, '/');
    if (!slash || slash == real) {
      errno = EINVAL;
      return NULL;
    }
    *slash = 0;
  }
}

void gpfs_free_fssnaphandle(gpfs_fssnap_handle_t *fssnapHandle) { free_handle(fssnapHandle); }

/* The snapshot's numeric id: the btrfs transaction that made it (ids only
   grow, like GPFS's); 0 for the active file system. */
unsigned int gpfs_get_snapid_from_fssnaphandle(gpfs_fssnap_handle_t *fssnapHandle) {
  if (fail("gpfs_get_snapid_from_fssnaphandle"))
    return (unsigned int)-1;
  if (!fssnapHandle) {
    errno = GPFS_E_INVAL_FSSNAPHANDLE;
    return (unsigned int)-1;
  }
  return fssnapHandle->snapdir ? (unsigned int)fssnapHandle->otransid : 0;
}

/* The id: magic, subvolume id, otransid, whether a snapshot. */
int gpfs_get_fssnapid_from_fssnaphandle(gpfs_fssnap_handle_t *fssnapHandle, gpfs_fssnap_id_t *fssnapId) {
  if (fail("gpfs_get_fssnapid_from_fssnaphandle"))
    return -1;
  if (!fssnapHandle) {
    errno = GPFS_E_INVAL_FSSNAPHANDLE;
    return -1;
  }
  if (!fssnapId) {
    errno = EINVAL;
    return -1;
  }
  unsigned long long v[3] = {fssnapHandle->subvol, fssnapHandle->otransid, fssnapHandle->snapdir != NULL};
  memset(fssnapId, 0, sizeof *fssnapId);
  memcpy(fssnapId->opaque, MAGIC, 8);
  memcpy(fssnapId->opaque + 8, v, sizeof v);
  return 0;
}

static void fill(gpfs_iattr64_t *a, const struct ent *e, int is_root) {
  memset(a, 0, sizeof *a);
  a->ia_version = GPFS_IA64_VERSION;
  a->ia_reclen = sizeof *a;
  a->ia_mode = e->st.st_mode;
  a->ia_uid = e->st.st_uid;
  a->ia_gid = e->st.st_gid;
  a->ia_inode = e->ino;
  a->ia_gen = e->gen;
  a->ia_nlink = e->st.st_nlink;
  a->ia_size = e->st.st_size;
  a->ia_blocks = e->st.st_blocks;
  a->ia_atime.tv_sec = e->st.st_atim.tv_sec;
  a->ia_atime.tv_nsec = e->st.st_atim.tv_nsec;
  a->ia_mtime.tv_sec = e->st.st_mtim.tv_sec;
  a->ia_mtime.tv_nsec = e->st.st_mtim.tv_nsec;
  a->ia_ctime.tv_sec = e->st.st_ctim.tv_sec;
  a->ia_ctime.tv_nsec = e->st.st_ctim.tv_nsec;
  a->ia_blocksize = e->st.st_blksize;
  a->ia_flags = is_root ? GPFS_IAFLAG_FILESET_ROOT : 0;
}

static int changed(const struct ent *o, const struct ent *n) {
  return o->gen != n->gen || o->st.st_mtim.tv_sec != n->st.st_mtim.tv_sec ||
         o->st.st_mtim.tv_nsec != n->st.st_mtim.tv_nsec || o->st.st_ctim.tv_sec != n->st.st_ctim.tv_sec ||
         o->st.st_ctim.tv_nsec != n->st.st_ctim.tv_nsec;
}

/* The snapshot with subvolume id `subvol` beside `h` in its .snapshots. */
static gpfs_fssnap_handle_t *sibling(gpfs_fssnap_handle_t *h, unsigned long long subvol) {
  DIR *d = opendir(h->snapdir);
  if (!d)
    return NULL;
  struct dirent *de;
  gpfs_fssnap_handle_t *found = NULL;
  errno = ENOENT;
  while (!found && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    char *p;
    if (asprintf(&p, "%s/%s", h->snapdir, de->d_name) < 0)
      break;
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct btrfs_ioctl_get_subvol_info_args info;
    memset(&info, 0, sizeof info);
    if (fd >= 0 && ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &info) >= 0 && info.treeid == subvol)
      found = open_root(p, h->snapdir);
    if (fd >= 0)
      close(fd);
    free(p);
  }
  closedir(d);
  if (!found && errno == 0)
    errno = ENOENT;
  return found;
}

static int push(gpfs_iscan_t *s, size_t *cap, const struct ent *e, int is_root, int deleted) {
  if (s->n == *cap) {
    *cap = *cap ? *cap * 2 : 256;
    gpfs_iattr64_t *a = realloc(s->attrs, *cap * sizeof *a);
    if (!a)
      return -1;
    s->attrs = a;
  }
  fill(&s->attrs[s->n], e, is_root);
  if (deleted) {
    s->attrs[s->n].ia_nlink = 0;
    s->attrs[s->n].ia_flags |= GPFS_IAFLAG_DELETED;
  }
  s->n++;
  return 0;
}

/* prev_fssnapId NULL: every inode. Otherwise the inodes whose generation,
   mtime or ctime differ from the previous snapshot's or that it did not
   have, and (unless FAKE_GPFS_DELETED=omit) those it had and this one has
   not, with ia_nlink 0 and GPFS_IAFLAG_DELETED. */
gpfs_iscan_t *gpfs_open_inodescan64(gpfs_fssnap_handle_t *fssnapHandle, const gpfs_fssnap_id_t *prev_fssnapId,
                                    unsigned long long *maxIno) {
  if (fail("gpfs_open_inodescan64"))
    return NULL;
  gpfs_fssnap_handle_t *h = fssnapHandle, *old = NULL;
  int same = 0; /* since itself: nothing was copied into the fake's snapshots */
  if (!h) {
    errno = GPFS_E_INVAL_FSSNAPHANDLE;
    return NULL;
  }
  if (prev_fssnapId) {
    unsigned long long v[3];
    memcpy(v, prev_fssnapId->opaque + 8, sizeof v);
    if (memcmp(prev_fssnapId->opaque, MAGIC, 8) != 0) {
      errno = GPFS_E_INVAL_FSSNAPID;
      return NULL;
    }
    if (!v[2] || !h->snapdir) {
      errno = EINVAL; /* not emulated: scans of or since the active file system */
      return NULL;
    }
    if (v[1] > h->otransid) {
      errno = ERANGE;
      return NULL;
    }
    same = v[0] == h->subvol;
    if (!same && !(old = sibling(h, v[0])))
      return NULL;
  }
  const char *mode = getenv("FAKE_GPFS_DELETED");
  int report_deleted = !(mode && !strcmp(mode, "omit"));
  gpfs_iscan_t *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  size_t cap = 0, i = 0, j = 0;
  int rc = 0;
  struct ent *root = NULL;
  for (size_t k = 0; k < h->n; k++)
    if (!strcmp(h->ents[k].path, h->root))
      root = &h->ents[k];
  while (rc == 0 && !same && (i < h->n || (old && j < old->n))) {
    struct ent *n = i < h->n ? &h->ents[i] : NULL;
    struct ent *o = old && j < old->n ? &old->ents[j] : NULL;
    if (!prev_fssnapId) {
      rc = push(s, &cap, n, n == root, 0);
      i++;
    } else if (n && (!o || n->ino < o->ino)) {
      rc = push(s, &cap, n, n == root, 0);
      i++;
    } else if (o && (!n || o->ino < n->ino)) {
      if (report_deleted)
        rc = push(s, &cap, o, 0, 1);
      j++;
    } else {
      if (changed(o, n))
        rc = push(s, &cap, n, n == root, 0);
      i++;
      j++;
    }
  }
  free_handle(old);
  if (rc != 0) {
    free(s->attrs);
    free(s);
    errno = ENOMEM;
    return NULL;
  }
  if (maxIno)
    *maxIno = h->n ? h->ents[h->n - 1].ino : 0;
  return s;
}

int gpfs_next_inode64(gpfs_iscan_t *iscan, unsigned long long termIno, const gpfs_iattr64_t **iattr) {
  if (fail("gpfs_next_inode64"))
    return -1;
  if (!iscan || !iattr) {
    errno = GPFS_E_INVAL_ISCAN;
    return -1;
  }
  if (iscan->pos >= iscan->n || (termIno && iscan->attrs[iscan->pos].ia_inode >= termIno)) {
    *iattr = NULL;
    return 0;
  }
  *iattr = &iscan->attrs[iscan->pos++];
  return 0;
}

int gpfs_seek_inode64(gpfs_iscan_t *iscan, unsigned long long ino) {
  if (fail("gpfs_seek_inode64"))
    return -1;
  if (!iscan) {
    errno = GPFS_E_INVAL_ISCAN;
    return -1;
  }
  size_t p = 0;
  while (p < iscan->n && iscan->attrs[p].ia_inode < ino)
    p++;
  iscan->pos = p;
  return 0;
}

void gpfs_close_inodescan(gpfs_iscan_t *iscan) {
  if (iscan) {
    free(iscan->attrs);
    free(iscan);
  }
}

/* Only reading (O_RDONLY, no statxbuf, no symLink) is emulated. */
gpfs_ifile_t *gpfs_iopen64(gpfs_fssnap_handle_t *fssnapHandle, unsigned long long ino, int open_flags,
                           const gpfs_iattr64_t *statxbuf, const char *symLink) {
  if (fail("gpfs_iopen64"))
    return NULL;
  if (!fssnapHandle) {
    errno = GPFS_E_INVAL_FSSNAPHANDLE;
    return NULL;
  }
  if ((open_flags & O_ACCMODE) != O_RDONLY || (open_flags & O_CREAT) || statxbuf || symLink) {
    errno = EINVAL;
    return NULL;
  }
  struct ent *e = find(fssnapHandle, ino);
  if (!e) {
    errno = ENOENT;
    return NULL;
  }
  gpfs_ifile_t *f = calloc(1, sizeof *f);
  if (!f)
    return NULL;
  f->h = fssnapHandle;
  f->e = e;
  return f;
}

static unsigned short de_type(mode_t m) {
  switch (m & S_IFMT) {
  case S_IFIFO: return GPFS_DE_FIFO;
  case S_IFCHR: return GPFS_DE_CHR;
  case S_IFDIR: return GPFS_DE_DIR;
  case S_IFBLK: return GPFS_DE_BLK;
  case S_IFREG: return GPFS_DE_REG;
  case S_IFLNK: return GPFS_DE_LNK;
  case S_IFSOCK: return GPFS_DE_SOCK;
  default: return GPFS_DE_OTHER;
  }
}

/* Every entry, "." and ".." included (chosen reading); `.snapshots` of the
   root left out; another inode space's junction flagged
   GPFS_DEFLAG_IJUNCTION. */
int gpfs_ireaddir64(gpfs_ifile_t *idir, const gpfs_direntx64_t **dirent) {
  if (fail("gpfs_ireaddir64"))
    return -1;
  if (!idir || !dirent) {
    errno = GPFS_E_INVAL_IFILE;
    return -1;
  }
  if (!S_ISDIR(idir->e->st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  if (!idir->dir && !(idir->dir = opendir(idir->e->path)))
    return -1;
  int is_root = !strcmp(idir->e->path, idir->h->root);
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(idir->dir);
    if (!de) {
      if (errno)
        return -1;
      *dirent = NULL;
      return 0;
    }
    if (is_root && !strcmp(de->d_name, ".snapshots"))
      continue;
    gpfs_direntx64_t *d = &idir->de;
    memset(d, 0, offsetof(gpfs_direntx64_t, d_name));
    d->d_version = GPFS_D64_VERSION;
    snprintf(d->d_name, sizeof d->d_name, "%s", de->d_name);
    size_t len = offsetof(gpfs_direntx64_t, d_name) + strlen(d->d_name) + 1;
    d->d_reclen = (len + 7) & ~(size_t)7;
    struct stat st;
    if (fstatat(dirfd(idir->dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
      return -1;
    char *p;
    if (asprintf(&p, "%s/%s", idir->e->path, de->d_name) < 0)
      return -1;
    d->d_ino = st.st_ino;
    d->d_gen = generation(p, &st);
    d->d_type = de_type(st.st_mode);
    int dots = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
    d->d_flags = !dots && other_space(&st, idir->h->dev) ? GPFS_DEFLAG_IJUNCTION : 0;
    free(p);
    *dirent = d;
    return 0;
  }
}

void gpfs_iclose(gpfs_ifile_t *ifile) {
  if (ifile) {
    if (ifile->dir)
      closedir(ifile->dir);
    free(ifile);
  }
}
