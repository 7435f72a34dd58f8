//! Trust on first use: the known-hosts file (format in the [module documentation](super)), the
//! per-config check of a host's recorded fingerprints, and appending a first contact.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{echostream_home, io_error, Fingerprint, RecordedHost, TlsError, TrustFailure};

/// The recorded fingerprints of one host in one known-hosts file, as a client config checks them.
#[derive(Debug)]
pub(super) struct KnownHostsCheck {
    file: PathBuf,
    host: String,
    /// Entries for `host`, loaded by `client_crypto` and extended on first contact; the lock is
    /// taken before `KNOWN_HOSTS_WRITE_LOCK`, never after.
    entries: Mutex<Vec<KnownHostEntry>>,
}

#[derive(Clone, Copy, Debug)]
struct KnownHostEntry {
    fingerprint: Fingerprint,
    line: usize,
}

impl KnownHostsCheck {
    /// Reads the entries for `host_key` from `path` (default [`echostream_home()`]`/known_hosts`),
    /// so a malformed file fails before any connection attempt.
    pub(super) fn load(path: Option<&Path>, host_key: &str) -> Result<Self, TlsError> {
        validate_host_key(host_key)?;
        let file = match path {
            Some(path) => path.to_path_buf(),
            None => echostream_home().join("known_hosts"),
        };
        let entries = read_known_hosts_for(&file, host_key)?;
        Ok(Self {
            file,
            host: host_key.to_string(),
            entries: Mutex::new(entries),
        })
    }

    fn entries(&self) -> MutexGuard<'_, Vec<KnownHostEntry>> {
        self.entries.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn mismatch(&self, presented: Fingerprint, recorded: KnownHostEntry) -> TrustFailure {
        TrustFailure::KnownHostMismatch {
            host: self.host.clone(),
            presented,
            recorded: recorded.fingerprint,
            file: self.file.clone(),
            line: recorded.line,
        }
    }

    /// The check when the certificate arrives: a host with entries must present one of them; a
    /// host without any is a first contact, recorded by [`KnownHostsCheck::record_if_new`] once
    /// the handshake signature checks out.
    pub(super) fn check(&self, presented: Fingerprint) -> Result<(), TrustFailure> {
        let entries = self.entries();
        match entries.first() {
            Some(first) if !entries.iter().any(|e| e.fingerprint == presented) => {
                Err(self.mismatch(presented, *first))
            }
            _ => Ok(()),
        }
    }

    /// Called once the server has proved it holds the certificate's key: records a first
    /// contact, re-checking the file in case another handshake recorded the host meanwhile.
    /// Returns the new entry when this call added one.
    pub(super) fn record_if_new(&self, presented: Fingerprint) -> Result<Option<RecordedHost>, TrustFailure> {
        let mut entries = self.entries();
        if entries.iter().any(|e| e.fingerprint == presented) {
            return Ok(None);
        }
        match append_known_host(&self.file, &self.host, presented) {
            Ok(Appended::New(line)) => {
                entries.push(KnownHostEntry {
                    fingerprint: presented,
                    line,
                });
                tracing::info!(
                    host = %self.host,
                    fingerprint = %presented,
                    file = %self.file.display(),
                    line,
                    "first contact: recorded the server's certificate fingerprint"
                );
                Ok(Some(RecordedHost {
                    host: self.host.clone(),
                    fingerprint: presented,
                    file: self.file.clone(),
                    line,
                }))
            }
            Ok(Appended::AlreadyPresent(line)) => {
                entries.push(KnownHostEntry {
                    fingerprint: presented,
                    line,
                });
                Ok(None)
            }
            Err(AppendError::Mismatch(recorded)) => Err(self.mismatch(presented, recorded)),
            Err(AppendError::File(detail)) => Err(TrustFailure::KnownHostsFile {
                file: self.file.clone(),
                detail,
            }),
        }
    }
}

/// One line of a known-hosts file, as [`list_known_hosts`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHost {
    /// The host key (the address string the client connected to).
    pub host: String,
    /// The recorded certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// 1-based line in the file.
    pub line: usize,
}

/// The default known-hosts file: [`echostream_home()`]`/known_hosts`.
pub fn default_known_hosts_file() -> PathBuf {
    echostream_home().join("known_hosts")
}

/// Every entry of the known-hosts file `path` (default [`default_known_hosts_file`]), in file
/// order. A missing file has none; a malformed line is an error naming the file and line.
pub fn list_known_hosts(path: Option<&Path>) -> Result<Vec<KnownHost>, TlsError> {
    let file = path.map_or_else(default_known_hosts_file, Path::to_path_buf);
    let (_, entries) = read_all(&file)?;
    Ok(entries)
}

/// The file's text and every entry in it.
fn read_all(file: &Path) -> Result<(String, Vec<KnownHost>), TlsError> {
    let text = read_known_hosts_text(file).map_err(io_error("read known-hosts file", file))?;
    let entries = parse_known_hosts(&text)
        .map_err(|(line, detail)| TlsError::KnownHosts {
            file: file.to_path_buf(),
            line,
            detail,
        })?
        .into_iter()
        .map(|(host, fingerprint, line)| KnownHost {
            host: host.to_owned(),
            fingerprint,
            line,
        })
        .collect();
    Ok((text, entries))
}

/// Removes every entry for `host` from the known-hosts file `path` (default
/// [`default_known_hosts_file`]) and returns the removed entries; the next connection to that
/// host is a first contact again. `host` matches a host key exactly, or, when it has no port
/// (`example.com`, `127.0.0.1`, `[::1]`), every `host:PORT` key of that host. Comments and other
/// lines are kept; the file is replaced atomically (written beside it, then renamed).
pub fn forget_known_host(path: Option<&Path>, host: &str) -> Result<Vec<KnownHost>, TlsError> {
    let file = path.map_or_else(default_known_hosts_file, Path::to_path_buf);
    let _guard = KNOWN_HOSTS_WRITE_LOCK
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if !file.exists() {
        return Ok(Vec::new());
    }
    // Another process appending between the read and the rename would lose its entry.
    let _file_lock = WriterLock::acquire(&file).map_err(|(path, source)| TlsError::Io {
        action: "lock",
        path,
        source,
    })?;
    let (text, entries) = read_all(&file)?;
    let removed: Vec<KnownHost> = entries
        .into_iter()
        .filter(|e| host_matches(&e.host, host))
        .collect();
    if removed.is_empty() {
        return Ok(removed);
    }
    let mut kept = String::with_capacity(text.len());
    for (index, raw) in text.lines().enumerate() {
        if !removed.iter().any(|r| r.line == index + 1) {
            kept.push_str(raw);
            kept.push('\n');
        }
    }
    let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, kept.as_bytes()).map_err(io_error("write", &tmp))?;
    if let Err(source) = fs::rename(&tmp, &file) {
        let _ = fs::remove_file(&tmp);
        return Err(TlsError::Io {
            action: "replace",
            path: file,
            source,
        });
    }
    Ok(removed)
}

/// `key` is `host` itself, or `host:PORT` when `host` has no port of its own.
fn host_matches(key: &str, host: &str) -> bool {
    if key == host {
        return true;
    }
    let has_port = host.parse::<std::net::SocketAddr>().is_ok()
        || (!host.starts_with('[') && host.matches(':').count() == 1);
    !has_port
        && key
            .strip_prefix(host)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|port| port.parse::<u16>().is_ok())
}

/// Serialises known-hosts appends within the process, so two first contacts cannot both decide
/// a host is new and append different fingerprints.
static KNOWN_HOSTS_WRITE_LOCK: Mutex<()> = Mutex::new(());

/// An exclusive `flock` on `FILE.lock` beside a known-hosts file, held while a writer re-reads
/// and changes the file: writers in other processes (two clients making first contacts at the
/// same moment, `echostream known-hosts forget`) take turns, so none acts on a stale read and
/// a rewrite never drops another's append. The kernel releases it when the holder exits, even
/// by SIGKILL. Readers do not lock: every change is one `write` or one `rename`.
#[derive(Debug)]
struct WriterLock {
    _file: fs::File,
}

impl WriterLock {
    fn acquire(file: &Path) -> Result<Self, (PathBuf, io::Error)> {
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = file.with_file_name(name);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| (parent.to_path_buf(), e))?;
        }
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| (path.clone(), e))?;
        #[cfg(unix)]
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| (path.clone(), io::Error::from(e)))?;
        Ok(Self { _file: lock })
    }
}

/// Written at the top of a known-hosts file when it is created.
const KNOWN_HOSTS_HEADER: &str = "# EchoStream known hosts: one `HOST_KEY sha256:FINGERPRINT` \
     entry per line, recorded on first contact.\n# Delete a line to forget that server's \
     identity; add a line to accept another certificate for a host.\n";

fn validate_host_key(host_key: &str) -> Result<(), TlsError> {
    let reason = if host_key.is_empty() {
        Some("it is empty")
    } else if host_key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else if host_key.starts_with('#') {
        Some("it starts with '#', which marks a comment")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TlsError::BadHostKey {
            host_key: host_key.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// One parsed entry: host key, fingerprint, 1-based line.
type ParsedEntry<'a> = (&'a str, Fingerprint, usize);

/// Parses a whole known-hosts file; `Err((line, detail))` for the first malformed line.
fn parse_known_hosts(content: &str) -> Result<Vec<ParsedEntry<'_>>, (usize, String)> {
    let mut entries = Vec::new();
    for (index, raw) in content.lines().enumerate() {
        let line = index + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let mut fields = text.split_whitespace();
        let (Some(host), fingerprint) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(fingerprint) = fingerprint else {
            return Err((
                line,
                format!(
                    "missing fingerprint after host key {host:?} (expected `HOST_KEY sha256:FINGERPRINT`)"
                ),
            ));
        };
        if fields.next().is_some() {
            return Err((
                line,
                "more than two fields (expected `HOST_KEY sha256:FINGERPRINT`)".to_string(),
            ));
        }
        let is_sha256 = fingerprint
            .get(..7)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("sha256:"));
        if !is_sha256 {
            return Err((
                line,
                format!("fingerprint {fingerprint:?} must start with `sha256:`"),
            ));
        }
        let parsed = fingerprint
            .parse::<Fingerprint>()
            .map_err(|err| (line, format!("invalid fingerprint for {host:?}: {err}")))?;
        entries.push((host, parsed, line));
    }
    Ok(entries)
}

/// Reads the file's text; a missing file is an empty one.
fn read_known_hosts_text(file: &Path) -> io::Result<String> {
    match fs::read_to_string(file) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(err),
    }
}

fn entries_for(entries: &[ParsedEntry<'_>], host: &str) -> Vec<KnownHostEntry> {
    entries
        .iter()
        .filter(|(entry_host, _, _)| *entry_host == host)
        .map(|&(_, fingerprint, line)| KnownHostEntry { fingerprint, line })
        .collect()
}

fn read_known_hosts_for(file: &Path, host: &str) -> Result<Vec<KnownHostEntry>, TlsError> {
    let text = read_known_hosts_text(file).map_err(io_error("read known-hosts file", file))?;
    let entries = parse_known_hosts(&text).map_err(|(line, detail)| TlsError::KnownHosts {
        file: file.to_path_buf(),
        line,
        detail,
    })?;
    Ok(entries_for(&entries, host))
}

enum Appended {
    New(usize),
    AlreadyPresent(usize),
}

enum AppendError {
    Mismatch(KnownHostEntry),
    File(String),
}

/// Appends `host sha256:fingerprint` unless the file (re-read under the lock) already has the
/// fingerprint for the host, or has other fingerprints for it.
fn append_known_host(file: &Path, host: &str, fingerprint: Fingerprint) -> Result<Appended, AppendError> {
    let _guard = KNOWN_HOSTS_WRITE_LOCK
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let _file_lock = WriterLock::acquire(file)
        .map_err(|(path, err)| AppendError::File(format!("could not lock {}: {err}", path.display())))?;
    let text =
        read_known_hosts_text(file).map_err(|err| AppendError::File(format!("could not read it: {err}")))?;
    let parsed = parse_known_hosts(&text)
        .map_err(|(line, detail)| AppendError::File(format!("line {line}: {detail}")))?;
    let existing = entries_for(&parsed, host);
    if let Some(entry) = existing.iter().find(|e| e.fingerprint == fingerprint) {
        return Ok(Appended::AlreadyPresent(entry.line));
    }
    if let Some(entry) = existing.first() {
        return Err(AppendError::Mismatch(*entry));
    }

    let mut addition = String::new();
    let mut line = text.lines().count() + 1;
    if text.is_empty() {
        addition.push_str(KNOWN_HOSTS_HEADER);
        line += KNOWN_HOSTS_HEADER.lines().count();
    } else if !text.ends_with('\n') {
        addition.push('\n');
    }
    addition.push_str(&format!("{host} sha256:{fingerprint}\n"));

    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|err| {
            AppendError::File(format!("could not create directory {}: {err}", parent.display()))
        })?;
    }
    let mut handle = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|err| AppendError::File(format!("could not open it for appending: {err}")))?;
    // One write call, so appends from other processes do not interleave within the entry.
    handle
        .write_all(addition.as_bytes())
        .map_err(|err| AppendError::File(format!("could not append to it: {err}")))?;
    Ok(Appended::New(line))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn forget_removes_exact_and_portless_matches_and_keeps_the_rest() {
        let dir = std::env::temp_dir().join(format!("es-kh-forget-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("known_hosts");
        let fp = |b: u8| format!("sha256:{}", hex::encode([b; 32]));
        let text = format!(
            "# header\n127.0.0.1:5000 {}\n127.0.0.1:6000 {}\nexample.com:5000 {}\n[::1]:5000 {}\n",
            fp(1),
            fp(2),
            fp(3),
            fp(4)
        );
        fs::write(&file, &text).unwrap();
        let removed = forget_known_host(Some(&file), "127.0.0.1:5000").unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].line, 2);
        let left = list_known_hosts(Some(&file)).unwrap();
        assert_eq!(left.len(), 3);
        let removed = forget_known_host(Some(&file), "127.0.0.1").unwrap();
        assert_eq!(
            removed.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
            ["127.0.0.1:6000"]
        );
        assert!(forget_known_host(Some(&file), "example").unwrap().is_empty());
        assert_eq!(forget_known_host(Some(&file), "[::1]").unwrap().len(), 1);
        let left = list_known_hosts(Some(&file)).unwrap();
        assert_eq!(
            left.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
            ["example.com:5000"]
        );
        assert!(fs::read_to_string(&file).unwrap().starts_with("# header\n"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn known_hosts_parser_reports_the_malformed_line() {
        let text = "# comment\n\nhost:1 sha256:00\n";
        let err = parse_known_hosts(text).unwrap_err();
        assert_eq!(err.0, 3);
        assert!(err.1.contains("64"), "{}", err.1);

        let err = parse_known_hosts("a\n").unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("missing fingerprint"), "{}", err.1);

        let fp = Fingerprint([7; 32]);
        let err = parse_known_hosts(&format!("a {fp}\n")).unwrap_err();
        assert!(err.1.contains("sha256:"), "{}", err.1);
    }

    #[test]
    fn known_hosts_parser_accepts_several_lines_per_host() {
        let (a, b) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let text = format!(
            "h:1 sha256:{a}\r\n  # x\nother sha256:{b}\nh:1 SHA256:{}\n",
            b.to_string().to_uppercase()
        );
        let entries = parse_known_hosts(&text).unwrap();
        let for_h = entries_for(&entries, "h:1");
        assert_eq!(for_h.len(), 2);
        assert_eq!((for_h[0].fingerprint, for_h[0].line), (a, 1));
        assert_eq!((for_h[1].fingerprint, for_h[1].line), (b, 4));
    }
}
