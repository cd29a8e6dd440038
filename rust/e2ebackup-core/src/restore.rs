//! Restore's small files (Linux): a batch of complete, already authenticated files put into one
//! folder, each as an unnamed file (`O_TMPFILE`) that gets its name only when whole (`linkat`
//! through `/proc/self/fd`, which never replaces a name that exists). The caller checks every
//! blob and every size before a file is handed over, so nothing here decides what is trusted:
//! this is only the system calls, one batch per call (the binding runs a whole batch in one GIL
//! release instead of a dozen Python calls per file).

use std::ffi::CString;
use std::os::fd::RawFd;

use crate::error::{Error, Result};

/// A name a file can have in a folder: not empty, not `.` or `..`, without `/` or NUL. Only
/// such a name reaches [`write_new_files`], so no name can reach another folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(CString);

impl FileName {
    /// Checks `name`; [`Error::InvalidArgument`] if it is not a file name.
    pub fn new(name: impl Into<Vec<u8>>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return Err(not_a_name(&name));
        }
        CString::new(name)
            .map(FileName)
            .map_err(|e| not_a_name(&e.into_vec()))
    }

    /// The name's bytes, without the terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn not_a_name(name: &[u8]) -> Error {
    Error::InvalidArgument(format!(
        "{:?} is not a file name",
        String::from_utf8_lossy(name)
    ))
}

/// One file of a batch: its name in the folder, its content (the parts one after another) and
/// its metadata. No `Debug`: the parts are restored plaintext.
#[derive(Clone)]
pub struct NewFile<'a> {
    pub name: FileName,
    pub parts: Vec<&'a [u8]>,
    /// Permission bits (and, if the caller keeps them, setuid, setgid and sticky).
    pub mode: u32,
    /// `(uid, gid)` to set (`u32::MAX` leaves that one as it is), or None to leave both. A
    /// failure to change the owner is ignored, as tar does.
    pub owner: Option<(u32, u32)>,
    /// Modification (and access) time, nanoseconds since 1970 (negative: before).
    pub mtime_ns: i64,
}

/// What became of one file of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written whole and linked at its name.
    Placed,
    /// The name already existed (a file, a folder, a symlink...): left untouched, nothing
    /// written.
    Taken,
}

/// Writes complete files into the folder open as `folder`: for each file an unnamed file
/// holding its parts, its owner, mode and times set through the descriptor, then linked at its
/// name. Returns what became of each file, in order. At the first other failure, returns
/// [`Error::NewFileFailed`] with that file's index, name and error number: the files before it
/// are done (placed or taken), the failing one leaves nothing and the ones after it are not
/// tried.
pub fn write_new_files(folder: RawFd, files: &[NewFile<'_>]) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        match write_one(folder, file) {
            Ok(outcome) => outcomes.push(outcome),
            Err(errno) => {
                return Err(Error::NewFileFailed {
                    index,
                    name: file.name.as_bytes().to_vec(),
                    errno,
                })
            }
        }
    }
    Ok(outcomes)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

/// Writes all of `data` at the file's current position.
fn write_all(fd: libc::c_int, mut data: &[u8]) -> std::result::Result<(), i32> {
    while !data.is_empty() {
        // SAFETY: `data` is a valid slice for its length; `fd` is a descriptor we opened.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let errno = last_errno();
            if errno == libc::EINTR {
                continue;
            }
            return Err(errno);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Content, owner, mode and times of the open unnamed file `fd`, then its name; `Taken` if the
/// name was taken (nothing replaced).
fn fill_and_link(
    folder: libc::c_int,
    fd: libc::c_int,
    file: &NewFile<'_>,
) -> std::result::Result<Outcome, i32> {
    for part in &file.parts {
        write_all(fd, part)?;
    }
    if let Some((uid, gid)) = file.owner {
        // Before the mode (chown clears setuid); a failure is ignored, as tar does.
        // SAFETY: plain system call on our descriptor.
        unsafe { libc::fchown(fd, uid, gid) };
    }
    // SAFETY: plain system call on our descriptor.
    if unsafe { libc::fchmod(fd, file.mode as libc::mode_t) } != 0 {
        return Err(last_errno());
    }
    let mtime = timespec(file.mtime_ns);
    let times = [mtime, mtime];
    // SAFETY: plain system call on our descriptor; `times` outlives the call.
    if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
        return Err(last_errno());
    }
    let proc_path = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| libc::EINVAL)?;
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            folder,
            file.name.0.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked != 0 {
        let errno = last_errno();
        return if errno == libc::EEXIST {
            Ok(Outcome::Taken)
        } else {
            Err(errno)
        };
    }
    Ok(Outcome::Placed)
}

fn write_one(folder: RawFd, file: &NewFile<'_>) -> std::result::Result<Outcome, i32> {
    let flags = libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC;
    // SAFETY: "." is NUL-terminated; `folder` is the caller's open folder descriptor.
    let fd = unsafe { libc::openat(folder, c".".as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(last_errno());
    }
    let result = fill_and_link(folder, fd, file);
    // SAFETY: our descriptor, closed once. An unnamed file that was never linked vanishes here.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    const MTIME: i64 = 1_700_000_000_123_456_789;

    /// A fresh folder under the temporary folder, removed with everything in it when dropped.
    struct TempFolder(PathBuf);

    impl TempFolder {
        fn new() -> Self {
            let tag: [u8; 8] = crate::rand::array().unwrap();
            let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
            let path = std::env::temp_dir().join(format!("e2ebackup-restore-{hex}"));
            fs::create_dir(&path).unwrap();
            TempFolder(path)
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempFolder {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn file<'a>(name: &[u8], parts: Vec<&'a [u8]>, mode: u32, mtime_ns: i64) -> NewFile<'a> {
        NewFile {
            name: FileName::new(name).unwrap(),
            parts,
            mode,
            owner: None,
            mtime_ns,
        }
    }

    fn write_into(folder: &Path, files: &[NewFile<'_>]) -> Result<Vec<Outcome>> {
        let dir = fs::File::open(folder).unwrap(); // a folder opens read-only
        write_new_files(dir.as_raw_fd(), files)
    }

    #[test]
    fn places_content_mode_and_times() {
        let tmp = TempFolder::new();
        let own = fs::metadata(&tmp.0).unwrap();
        let mut owned = file(b"owned", vec![b"x"], 0o600, 0);
        owned.owner = Some((own.uid(), own.gid())); // the only owner a test may set
        let files = [
            file(b"a", vec![b"hello ", b"world"], 0o640, MTIME),
            file(b"empty", vec![], 0o600, -5), // before 1970: a negative time
            owned,
        ];
        let outcomes = write_into(&tmp.0, &files).unwrap();
        assert_eq!(outcomes, [Outcome::Placed; 3]);
        assert_eq!(fs::read(tmp.0.join("a")).unwrap(), b"hello world");
        let a = fs::metadata(tmp.0.join("a")).unwrap();
        assert_eq!(a.permissions().mode() & 0o7777, 0o640);
        assert_eq!((a.mtime(), a.mtime_nsec()), (1_700_000_000, 123_456_789));
        let empty = fs::metadata(tmp.0.join("empty")).unwrap();
        assert_eq!(empty.len(), 0);
        assert_eq!((empty.mtime(), empty.mtime_nsec()), (-1, 999_999_995));
        let owned = fs::metadata(tmp.0.join("owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid()), (own.uid(), own.gid()));
        assert_eq!(tmp.names(), ["a", "empty", "owned"]); // no temporary name left
    }

    #[test]
    fn never_replaces_an_existing_name() {
        let tmp = TempFolder::new();
        fs::write(tmp.0.join("there"), b"mine").unwrap();
        symlink("/nonexistent/target", tmp.0.join("link")).unwrap();
        fs::create_dir(tmp.0.join("folder")).unwrap();
        let files = [
            file(b"there", vec![b"theirs"], 0o644, 0),
            file(b"link", vec![b"theirs"], 0o644, 0),
            file(b"folder", vec![b"theirs"], 0o644, 0),
            file(b"new", vec![b"x"], 0o644, 0),
        ];
        let outcomes = write_into(&tmp.0, &files).unwrap();
        assert_eq!(
            outcomes,
            [
                Outcome::Taken,
                Outcome::Taken,
                Outcome::Taken,
                Outcome::Placed
            ]
        );
        assert_eq!(fs::read(tmp.0.join("there")).unwrap(), b"mine");
        assert_eq!(
            fs::read_link(tmp.0.join("link")).unwrap(),
            Path::new("/nonexistent/target")
        );
        assert!(fs::read_dir(tmp.0.join("folder")).unwrap().next().is_none());
        assert_eq!(tmp.names(), ["folder", "link", "new", "there"]);
    }

    #[test]
    fn refuses_what_is_not_a_file_name() {
        for name in [&b""[..], b".", b"..", b"a/b", b"../x", b"/", b"nul\0byte"] {
            match FileName::new(name) {
                Err(Error::InvalidArgument(msg)) => {
                    assert!(msg.ends_with("is not a file name"), "{msg}")
                }
                other => panic!("{name:?} gave {other:?}"),
            }
        }
        for name in [
            &b"a"[..],
            b"...",
            b".hidden",
            b"a b",
            b"\xff\xfe",
            &[b'x'; 255],
        ] {
            assert_eq!(FileName::new(name).unwrap().as_bytes(), name);
        }
    }

    #[test]
    fn a_failure_mid_batch_says_which_file() {
        let tmp = TempFolder::new();
        let long = vec![b'n'; 300]; // longer than any name a folder takes: ENAMETOOLONG
        let files = [
            file(b"a", vec![b"first"], 0o644, 0),
            file(&long, vec![b"second"], 0o644, 0),
            file(b"c", vec![b"third"], 0o644, 0),
        ];
        match write_into(&tmp.0, &files) {
            Err(Error::NewFileFailed { index, name, errno }) => {
                assert_eq!((index, errno), (1, libc::ENAMETOOLONG));
                assert_eq!(name, long);
            }
            other => panic!("{other:?}"),
        }
        // The file before is placed; the failing one leaves nothing; the one after is not tried.
        assert_eq!(tmp.names(), ["a"]);
        assert_eq!(fs::read(tmp.0.join("a")).unwrap(), b"first");
    }

    #[test]
    fn a_folder_that_is_not_one_fails_at_the_first_file() {
        let tmp = TempFolder::new();
        fs::write(tmp.0.join("plain"), b"").unwrap();
        let err =
            write_into(&tmp.0.join("plain"), &[file(b"a", vec![b"x"], 0o644, 0)]).unwrap_err();
        assert_eq!(
            err,
            Error::NewFileFailed {
                index: 0,
                name: b"a".to_vec(),
                errno: libc::ENOTDIR
            }
        );
        // The message says which file of the batch, not its name.
        assert_eq!(
            err.to_string(),
            format!(
                "could not write file 0 of the batch: {}",
                std::io::Error::from_raw_os_error(libc::ENOTDIR)
            )
        );
        assert_eq!(tmp.names(), ["plain"]);
    }
}
