//! Fetching guest kernels and busybox from Debian's archive, with a download-once cache.
//!
//! Layout of the cache (see [`cache_dir`]):
//!
//! ```text
//! <cache>/kernels/<debian-arch>-<name>/kernel.txt   manifest: package, release, boot image
//! <cache>/kernels/<debian-arch>-<name>/root/        the unpacked linux-image package
//! <cache>/kernels/<debian-arch>-<name>/Image        decompressed kernel (only if gzip'd)
//! <cache>/busybox/<debian-arch>/busybox             static busybox
//! ```
//!
//! `<name>` is the kernel's name as a test writes it: `6.12`, or `6.12-rt` / `6.12-16k` for a
//! [`Flavour`] other than Debian's default one (see [`fetch_kernel`]).
//!
//! Everything is built in a private staging directory next to its final place and renamed into
//! place only when complete, so an interrupted download never leaves a half-filled cache entry,
//! and a later call that finds the entry uses it without running apt at all.

use std::cmp::Ordering;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Arch, VmError};

/// Serialises fetches within one process, so parallel tests never download the same package
/// twice. Across processes the staging-then-rename scheme keeps the cache consistent.
pub(crate) static FETCH_LOCK: Mutex<()> = Mutex::new(());

/// Name of the manifest written last into a kernel's cache directory.
const MANIFEST: &str = "kernel.txt";

/// The harness cache directory: `$EDGEARMOR_VM_CACHE` if set (and non-empty), else
/// `$HOME/.cache/edgearmor-vm`, shared by every checkout on the machine (kernels are
/// hundreds of MB), else `<workspace root>/.vm-cache` when there is no home.
pub fn cache_dir() -> PathBuf {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("EDGEARMOR_VM_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".cache/edgearmor-vm");
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().and_then(Path::parent);
    root.unwrap_or(manifest).join(".vm-cache")
}

/// Which of Debian's builds of a kernel series a test boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// The standard build (`-amd64`, `-arm64`): 4 KiB pages, preemption model chosen at boot.
    Standard,
    /// The PREEMPT_RT build (`-rt-amd64`, `-rt-arm64`), as on industrial gateways.
    Rt,
    /// The 16 KiB-page build (`-arm64-16k`, arm64 only), as on a Raspberry Pi 5. It needs a
    /// CPU with the 16K translation granule, which QEMU's `-cpu max` has.
    Pages16k,
}

impl Flavour {
    /// The suffix naming the flavour after the series in a kernel name: `""`, `"-rt"`, `"-16k"`.
    pub fn suffix(self) -> &'static str {
        match self {
            Flavour::Standard => "",
            Flavour::Rt => "-rt",
            Flavour::Pages16k => "-16k",
        }
    }

    /// Debian's flavour name in package names and kernel releases for `arch`: `arm64`,
    /// `rt-arm64`, `arm64-16k`.
    pub fn debian(self, arch: Arch) -> String {
        let deb_arch = arch.debian();
        match self {
            Flavour::Standard => deb_arch.to_owned(),
            Flavour::Rt => format!("rt-{deb_arch}"),
            Flavour::Pages16k => format!("{deb_arch}-16k"),
        }
    }
}

/// A kernel as a test names it: a Debian series and a [`Flavour`], written `6.12`, `6.12-rt`
/// or `6.12-16k` (see [`KernelName::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelName {
    /// `MAJOR.MINOR`, e.g. `"6.1"` or `"6.12"`.
    pub series: String,
    /// Which build of the series.
    pub flavour: Flavour,
}

impl KernelName {
    /// Parses `SERIES[-rt|-16k]`, where `SERIES` is `MAJOR.MINOR` (`6.12`, `6.12-rt`).
    pub fn parse(name: &str) -> Result<KernelName, VmError> {
        let (series, flavour) = if let Some(series) = name.strip_suffix("-rt") {
            (series, Flavour::Rt)
        } else if let Some(series) = name.strip_suffix("-16k") {
            (series, Flavour::Pages16k)
        } else {
            (name, Flavour::Standard)
        };
        let mut parts = series.split('.');
        let valid = parts.clone().count() == 2 && parts.all(is_digits);
        if !valid {
            return Err(VmError::BadPackage {
                package: format!("linux-image-{name}-*"),
                reason: format!(
                    "kernel name {name:?} is not of the form MAJOR.MINOR[-rt|-16k] (e.g. 6.12-rt)"
                ),
            });
        }
        Ok(KernelName {
            series: series.to_owned(),
            flavour,
        })
    }
}

impl std::fmt::Display for KernelName {
    /// Formats as the name [`KernelName::parse`] reads (`6.12-rt`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.series, self.flavour.suffix())
    }
}

/// A Debian kernel unpacked in the cache, ready for QEMU's `-kernel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// The architecture it runs on.
    pub arch: Arch,
    /// The series asked for, e.g. `"6.1"` or `"6.12"` (without the flavour).
    pub series: String,
    /// The build of the series.
    pub flavour: Flavour,
    /// The Debian package it came from, e.g. `linux-image-6.12.43+deb12-arm64-unsigned`.
    pub package: String,
    /// The kernel release, as `uname -r` prints it in the guest, e.g. `6.12.43+deb12-arm64`.
    pub release: String,
    /// The image to pass to `-kernel`: the package's `vmlinuz-<release>`, or a decompressed
    /// `Image` when that file is gzip-compressed.
    pub vmlinuz: PathBuf,
    /// The package's `lib/modules/<release>` directory (virtio-net and other modules).
    pub modules_dir: PathBuf,
    /// The package's `boot/config-<release>` (the kernel build configuration).
    pub config: PathBuf,
}

impl GuestKernel {
    /// The name it was fetched by (`6.12`, `6.12-rt`, `6.12-16k`).
    pub fn name(&self) -> KernelName {
        KernelName {
            series: self.series.clone(),
            flavour: self.flavour,
        }
    }
}

/// Returns the newest Debian kernel named `name` for `arch`, downloading and unpacking it into
/// `cache/kernels/<debian-arch>-<name>/` on first use. `name` is a [`KernelName`]: a series
/// (`"6.1"`, `"6.12"`) for Debian's standard build, or with `-rt` (PREEMPT_RT) or `-16k`
/// (16 KiB pages, arm64) appended for those builds.
///
/// The newest package is the highest-versioned `linux-image-<series>.*-<flavour>-unsigned`
/// that `apt-cache search` lists, where `<flavour>` is [`Flavour::debian`] (`arm64`,
/// `rt-arm64`, `arm64-16k`; Debian 6.1 packages are named `6.1.0-NN`, 6.12 ones
/// `6.12.NN+debNN`). Its name is recorded in the cache; later calls reuse the cached kernel
/// without running apt, even after the archive has moved on. Delete the directory to upgrade.
///
/// Needs `apt-cache`, `apt-get` and `dpkg-deb` on first use (and, for arm64, a host with
/// `dpkg --add-architecture arm64` and fresh apt lists).
pub fn fetch_kernel(cache: &Path, arch: Arch, name: &str) -> Result<GuestKernel, VmError> {
    let name = KernelName::parse(name)?;
    let kernels = cache.join("kernels");
    let entry = format!("{}-{name}", arch.debian());
    let dir = kernels.join(&entry);

    let _guard = FETCH_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(kernel) = read_manifest(&dir, arch, &name)? {
        return Ok(kernel);
    }

    let flavour = name.flavour.debian(arch);
    let pattern = package_pattern(&name, &flavour);
    let package = newest_package(&pattern, |package| {
        release_of(package, &name.series, &flavour).is_some()
    })?;
    let release = release_of(&package, &name.series, &flavour)
        .ok_or_else(|| VmError::NoPackage {
            pattern: pattern.clone(),
        })?
        .to_owned();

    let staging = Staging::create(&kernels, &entry)?;
    let deb = apt_download(staging.path(), &format!("{package}:{}", arch.debian()))?;
    let root = staging.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::remove_file(&deb).map_err(|e| VmError::io("removing", &deb, e))?;

    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    let modules = root.join("lib/modules").join(&release);
    for needed in [&vmlinuz, &modules] {
        if !needed.exists() {
            return Err(VmError::BadPackage {
                package,
                reason: format!("it has no {}", needed.display()),
            });
        }
    }
    let boot_image = if is_gzip(&vmlinuz)? {
        let image = staging.path().join("Image");
        gunzip(&vmlinuz, &image)?;
        PathBuf::from("Image")
    } else {
        Path::new("root/boot").join(format!("vmlinuz-{release}"))
    };
    let manifest = format!(
        "package={package}\nrelease={release}\nimage={}\n",
        boot_image.display()
    );
    let manifest_path = staging.path().join(MANIFEST);
    fs::write(&manifest_path, manifest).map_err(|e| VmError::io("writing", &manifest_path, e))?;

    // Another process may have filled the entry while we downloaded: keep theirs.
    if let Some(kernel) = read_manifest(&dir, arch, &name)? {
        return Ok(kernel);
    }
    staging.install(&dir)?;
    read_manifest(&dir, arch, &name)?.ok_or_else(|| VmError::BadPackage {
        package,
        reason: format!(
            "its cache entry {} did not verify after unpacking",
            dir.display()
        ),
    })
}

/// The `apt-cache search --names-only` expression for every package of `name`, whose Debian
/// flavour is `flavour` (`rt-arm64`).
fn package_pattern(name: &KernelName, flavour: &str) -> String {
    let escaped = name.series.replace('.', "\\.");
    format!("^linux-image-{escaped}(\\.0-[0-9]+|\\.[0-9]+\\+deb[0-9]+)-{flavour}-unsigned$")
}

/// Returns a static busybox for `arch` (from Debian's `busybox-static`, the `arm64` build for
/// aarch64), downloading it into `cache/busybox/<debian-arch>/busybox` on first use and reusing
/// it, without apt, afterwards.
pub fn fetch_busybox(cache: &Path, arch: Arch) -> Result<PathBuf, VmError> {
    let parent = cache.join("busybox");
    let dir = parent.join(arch.debian());
    let binary = dir.join("busybox");

    let _guard = FETCH_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if binary.is_file() {
        return Ok(binary);
    }
    let staging = Staging::create(&parent, arch.debian())?;
    let package = format!("busybox-static:{}", arch.debian());
    let deb = apt_download(staging.path(), &package)?;
    let root = staging.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let unpacked = root.join("bin/busybox");
    if !unpacked.is_file() {
        return Err(VmError::BadPackage {
            package,
            reason: "it has no bin/busybox".into(),
        });
    }
    let staged = staging.path().join("busybox");
    fs::rename(&unpacked, &staged).map_err(|e| VmError::io("moving", &unpacked, e))?;
    fs::remove_file(&deb).map_err(|e| VmError::io("removing", &deb, e))?;
    fs::remove_dir_all(&root).map_err(|e| VmError::io("removing", &root, e))?;
    staging.install(&dir)?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(VmError::BadPackage {
            package,
            reason: format!("{} is missing after install", binary.display()),
        })
    }
}

/// Reads a complete kernel cache entry, or `None` when there is none (or it is incomplete).
fn read_manifest(
    dir: &Path,
    arch: Arch,
    name: &KernelName,
) -> Result<Option<GuestKernel>, VmError> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(VmError::io("reading", &path, e)),
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let (Some(package), Some(release), Some(image)) =
        (field("package"), field("release"), field("image"))
    else {
        return Ok(None);
    };
    let root = dir.join("root");
    let kernel = GuestKernel {
        arch,
        series: name.series.clone(),
        flavour: name.flavour,
        vmlinuz: dir.join(image),
        modules_dir: root.join("lib/modules").join(&release),
        config: root.join("boot").join(format!("config-{release}")),
        package,
        release,
    };
    if kernel.vmlinuz.is_file() && kernel.modules_dir.is_dir() {
        Ok(Some(kernel))
    } else {
        Ok(None)
    }
}

/// The kernel release in a package name such as `linux-image-6.12.43+deb12-amd64-unsigned`
/// (`6.12.43+deb12-amd64`), if the name belongs to `series` and the Debian flavour `flavour`
/// (`amd64`, `rt-arm64`, `arm64-16k`; see [`Flavour::debian`]).
fn release_of<'a>(package: &'a str, series: &str, flavour: &str) -> Option<&'a str> {
    let release = package
        .strip_prefix("linux-image-")?
        .strip_suffix("-unsigned")?;
    let version = release.strip_suffix(flavour)?.strip_suffix('-')?;
    let rest = version.strip_prefix(series)?.strip_prefix('.')?;
    // 6.1 style: "0-NN"; 6.12 style: "NN+debNN".
    let ok = match rest.split_once('-') {
        Some(("0", abi)) => is_digits(abi),
        _ => match rest.split_once("+deb") {
            Some((patch, deb)) => is_digits(patch) && is_digits(deb),
            None => false,
        },
    };
    ok.then_some(release)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The highest-versioned package whose name matches `pattern` (an `apt-cache search
/// --names-only` regular expression) and `accept`.
fn newest_package(pattern: &str, accept: impl Fn(&str) -> bool) -> Result<String, VmError> {
    let out = run(Command::new("apt-cache")
        .args(["search", "--names-only"])
        .arg(pattern))?;
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| accept(name))
        .max_by(|a, b| natural_cmp(a, b))
        .map(str::to_owned)
        .ok_or_else(|| VmError::NoPackage {
            pattern: pattern.to_owned(),
        })
}

/// Compares strings with runs of digits compared as numbers (`6.12.9` < `6.12.10`).
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, xa), (db, xb)) in ca.iter().zip(cb.iter()) {
        let ord = if *da && *db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            xa.cmp(xb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Runs `apt-get download <spec>` in `dir` and returns the path of the single `.deb` it wrote.
pub(crate) fn apt_download(dir: &Path, spec: &str) -> Result<PathBuf, VmError> {
    run(Command::new("apt-get")
        .args(["download", "-q", spec])
        .current_dir(dir))?;
    let entries = fs::read_dir(dir).map_err(|e| VmError::io("listing", dir, e))?;
    let mut debs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| VmError::io("listing", dir, e))?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "deb") {
            debs.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(debs) {
        Ok([deb]) => Ok(deb),
        Err(found) => Err(VmError::BadPackage {
            package: spec.to_owned(),
            reason: format!(
                "`apt-get download` left {} .deb files in {}",
                found.len(),
                dir.display()
            ),
        }),
    }
}

/// Whether the file starts with the gzip magic bytes.
fn is_gzip(path: &Path) -> Result<bool, VmError> {
    let mut magic = [0u8; 2];
    let mut file = fs::File::open(path).map_err(|e| VmError::io("opening", path, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x1f, 0x8b]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(VmError::io("reading", path, e)),
    }
}

/// Decompresses the gzip file `from` into `to`.
pub(crate) fn gunzip(from: &Path, to: &Path) -> Result<(), VmError> {
    let input = fs::File::open(from).map_err(|e| VmError::io("opening", from, e))?;
    let mut decoder = flate2::read::MultiGzDecoder::new(io::BufReader::new(input));
    let output = fs::File::create(to).map_err(|e| VmError::io("creating", to, e))?;
    let mut writer = io::BufWriter::new(output);
    io::copy(&mut decoder, &mut writer).map_err(|e| VmError::io("decompressing", from, e))?;
    io::Write::flush(&mut writer).map_err(|e| VmError::io("writing", to, e))
}

/// Renders a command as a shell-like string for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        out.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            out.push_str(&format!("{arg:?}"));
        } else {
            out.push_str(&arg);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        out.push_str(&format!(" (in {})", dir.display()));
    }
    out
}

/// Runs a command to completion, returning its stdout, or a [`VmError::Command`] carrying its
/// stderr when it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>, VmError> {
    let out = cmd.output().map_err(|source| VmError::Spawn {
        cmd: describe(cmd),
        source,
    })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(VmError::Command {
            cmd: describe(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A private directory next to a cache entry, removed on drop unless installed.
pub(crate) struct Staging {
    path: PathBuf,
    installed: bool,
}

impl Staging {
    pub(crate) fn create(parent: &Path, name: &str) -> Result<Self, VmError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(".staging-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| VmError::io("creating directory", &path, e))?;
        Ok(Staging {
            path,
            installed: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the staging directory to `dest`, replacing an incomplete `dest` left by an
    /// interrupted run. If another process installed `dest` first, keeps theirs.
    pub(crate) fn install(mut self, dest: &Path) -> Result<(), VmError> {
        if dest.exists() {
            fs::remove_dir_all(dest).map_err(|e| VmError::io("removing stale", dest, e))?;
        }
        match fs::rename(&self.path, dest) {
            Ok(()) => {
                self.installed = true;
                Ok(())
            }
            // Lost a race with another process: its entry is as good as ours.
            Err(_) if dest.exists() => Ok(()),
            Err(e) => Err(VmError::io("installing", dest, e)),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.installed {
            // Best effort: a leftover staging directory only wastes space.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names() {
        assert_eq!(
            release_of("linux-image-6.12.43+deb12-arm64-unsigned", "6.12", "arm64"),
            Some("6.12.43+deb12-arm64")
        );
        assert_eq!(
            release_of("linux-image-6.1.0-37-amd64-unsigned", "6.1", "amd64"),
            Some("6.1.0-37-amd64")
        );
        assert_eq!(
            release_of("linux-image-6.1.0-37-amd64-unsigned", "6.12", "amd64"),
            None
        );
        assert_eq!(
            release_of("linux-image-6.12.43+deb12-amd64-unsigned", "6.1", "amd64"),
            None
        );
        assert_eq!(
            release_of("linux-image-6.1.0-37-amd64-unsigned", "6.1", "arm64"),
            None
        );
        assert_eq!(
            release_of("linux-image-6.1.0-37-rt-amd64-unsigned", "6.1", "amd64"),
            None
        );
        assert_eq!(
            release_of("linux-image-6.1.0-37-cloud-amd64-unsigned", "6.1", "amd64"),
            None
        );
        assert_eq!(
            release_of("linux-image-6.1.0-37-amd64", "6.1", "amd64"),
            None
        );
    }

    #[test]
    fn flavoured_release_names() {
        let rt = "linux-image-6.12.117+deb12-rt-arm64-unsigned";
        let k16 = "linux-image-6.12.117+deb12-arm64-16k-unsigned";
        let cloud = "linux-image-6.12.117+deb12-cloud-arm64-unsigned";
        let standard = "linux-image-6.12.117+deb12-arm64-unsigned";
        let (arm, rt_f, k16_f) = (
            Flavour::Standard.debian(Arch::Aarch64),
            Flavour::Rt.debian(Arch::Aarch64),
            Flavour::Pages16k.debian(Arch::Aarch64),
        );
        assert_eq!((rt_f.as_str(), k16_f.as_str()), ("rt-arm64", "arm64-16k"));
        assert_eq!(
            release_of(rt, "6.12", &rt_f),
            Some("6.12.117+deb12-rt-arm64")
        );
        assert_eq!(
            release_of(k16, "6.12", &k16_f),
            Some("6.12.117+deb12-arm64-16k")
        );
        // Each flavour finds only its own packages.
        for other in [rt, k16, cloud] {
            assert_eq!(release_of(other, "6.12", &arm), None, "{other}");
        }
        for other in [standard, k16, cloud] {
            assert_eq!(release_of(other, "6.12", &rt_f), None, "{other}");
        }
        for other in [standard, rt, cloud] {
            assert_eq!(release_of(other, "6.12", &k16_f), None, "{other}");
        }
        assert_eq!(
            Flavour::Rt.debian(Arch::X86_64),
            "rt-amd64",
            "Debian names rt builds flavour-first on every architecture"
        );
    }

    #[test]
    fn kernel_names() {
        let parse = |s| KernelName::parse(s).map(|n| (n.series.clone(), n.flavour, n.to_string()));
        assert_eq!(
            parse("6.12").expect("6.12"),
            ("6.12".into(), Flavour::Standard, "6.12".into())
        );
        assert_eq!(
            parse("6.12-rt").expect("6.12-rt"),
            ("6.12".into(), Flavour::Rt, "6.12-rt".into())
        );
        assert_eq!(
            parse("6.1-16k").expect("6.1-16k"),
            ("6.1".into(), Flavour::Pages16k, "6.1-16k".into())
        );
        for bad in [
            "6",
            "6.12.1",
            "6.x",
            "-rt",
            "6.12-rt-16k",
            "6.12-cloud",
            "6.12-",
            "",
        ] {
            let err = KernelName::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("MAJOR.MINOR[-rt|-16k]"), "{bad}: {err}");
        }
    }

    #[test]
    fn patterns_name_the_flavour() {
        let name = KernelName::parse("6.12-16k").expect("name");
        assert_eq!(
            package_pattern(&name, &name.flavour.debian(Arch::Aarch64)),
            "^linux-image-6\\.12(\\.0-[0-9]+|\\.[0-9]+\\+deb[0-9]+)-arm64-16k-unsigned$"
        );
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("6.12.9+deb12", "6.12.10+deb12"), Ordering::Less);
        assert_eq!(
            natural_cmp("6.1.0-57-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(natural_cmp("a1", "a1"), Ordering::Equal);
        assert_eq!(natural_cmp("a01", "a1"), Ordering::Equal);
        assert_eq!(natural_cmp("a1", "a1b"), Ordering::Less);
        let mut names = [
            "linux-image-6.12.107+deb12-amd64-unsigned",
            "linux-image-6.12.43+deb12-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64-unsigned",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names[2], "linux-image-6.12.117+deb12-amd64-unsigned");
        assert_eq!(names[0], "linux-image-6.12.43+deb12-amd64-unsigned");
    }

    #[test]
    fn gzip_detection_and_gunzip() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("edgearmor-vm-gz-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let plain = dir.join("plain");
        let packed = dir.join("packed.gz");
        let unpacked = dir.join("unpacked");
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&plain, &payload).expect("write plain");
        let mut enc = flate2::write::GzEncoder::new(
            fs::File::create(&packed).expect("create gz"),
            flate2::Compression::fast(),
        );
        enc.write_all(&payload).expect("compress");
        enc.finish().expect("finish gz");

        assert!(!is_gzip(&plain).expect("probe plain"));
        assert!(is_gzip(&packed).expect("probe gz"));
        gunzip(&packed, &unpacked).expect("gunzip");
        assert_eq!(fs::read(&unpacked).expect("read back"), payload);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn manifest_round_trip_needs_files() {
        let dir = std::env::temp_dir().join(format!("edgearmor-vm-mf-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let name = KernelName::parse("6.12").expect("name");
        assert_eq!(
            read_manifest(&dir, Arch::X86_64, &name).expect("missing ok"),
            None
        );
        let release = "6.12.1+deb12-amd64";
        fs::create_dir_all(dir.join("root/boot")).expect("mkdir");
        fs::create_dir_all(dir.join("root/lib/modules").join(release)).expect("mkdir");
        fs::write(
            dir.join(MANIFEST),
            format!(
                "package=linux-image-{release}-unsigned\nrelease={release}\n\
                 image=root/boot/vmlinuz-{release}\n"
            ),
        )
        .expect("manifest");
        // The image is missing: the entry is incomplete.
        assert_eq!(
            read_manifest(&dir, Arch::X86_64, &name).expect("read"),
            None
        );
        fs::write(dir.join(format!("root/boot/vmlinuz-{release}")), b"k").expect("image");
        let k = read_manifest(&dir, Arch::X86_64, &name)
            .expect("read")
            .expect("complete");
        assert_eq!(k.release, release);
        assert_eq!(k.package, format!("linux-image-{release}-unsigned"));
        assert!(k.modules_dir.ends_with(format!("lib/modules/{release}")));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
