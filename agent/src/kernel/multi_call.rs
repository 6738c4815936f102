//! Multi-call binaries (busybox, toybox): one executable that runs the applet named
//! by the link it was invoked through. A process rule on such a link must not become
//! a rule on the binary (that would block every applet), so rule paths are
//! classified here: a link to a multi-call binary becomes an applet rule (the kernel
//! matches the last component of the name execve was given, on executables marked
//! as multi-call); a path that does not exist yet becomes both an exact rule and an
//! applet rule, so a link created later is covered; anything else is resolved as
//! before (`/usr/bin/python3 -> python3.11` is a rule on python3.11). The probes
//! also follow the arguments (`busybox wget`); see the probes' `applet` module.

use std::collections::BTreeSet;

pub use edgearmor_probe_abi::MULTI_CALL_PROGRAMS;

/// Where the multi-call binaries of a host are looked for (besides the targets of
/// rule paths): each program of [`MULTI_CALL_PROGRAMS`] in each directory.
const SEARCHED_DIRS: &[&str] = &["/bin", "/sbin", "/usr/bin", "/usr/sbin"];

/// Whether the file name `name` is a multi-call program's (by prefix, as busybox
/// tests its own name: Yocto's `busybox.nosuid` / `busybox.suid` count).
pub fn is_multi_call_name(name: &str) -> bool {
    MULTI_CALL_PROGRAMS.iter().any(|p| name.starts_with(p))
}

/// The last component of a path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What a process rule's path is on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecPath {
    /// Nothing there (yet).
    Missing,
    /// A file, or a link to one that is not multi-call: the resolved path.
    Plain(String),
    /// A link to the multi-call binary `binary`, run as applet `applet`.
    Applet { applet: String, binary: String },
    /// The multi-call binary itself (resolved): a rule on it covers every applet.
    MultiCall(String),
}

/// Classifies `path` given its resolution (`real`, `None` when it does not exist).
pub fn classify(path: &str, real: Option<String>) -> ExecPath {
    let Some(real) = real else {
        return ExecPath::Missing;
    };
    if !is_multi_call_name(file_name(&real)) {
        return ExecPath::Plain(real);
    }
    let applet = file_name(path);
    if is_multi_call_name(applet) || applet.is_empty() {
        ExecPath::MultiCall(real)
    } else {
        ExecPath::Applet {
            applet: applet.to_owned(),
            binary: real,
        }
    }
}

/// The multi-call binaries installed in the usual places, resolved.
pub fn installed(real_path: &dyn Fn(&str) -> Option<String>) -> BTreeSet<String> {
    SEARCHED_DIRS
        .iter()
        .flat_map(|dir| {
            MULTI_CALL_PROGRAMS
                .iter()
                .map(move |p| format!("{dir}/{p}"))
        })
        .filter_map(|candidate| real_path(&candidate))
        .filter(|real| is_multi_call_name(file_name(real)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yocto(path: &str) -> Option<String> {
        match path {
            "/bin/busybox" => Some("/bin/busybox.nosuid".into()),
            "/usr/bin/wget" | "/bin/sh" | "/bin/cat" => Some("/bin/busybox.nosuid".into()),
            "/usr/bin/python3" => Some("/usr/bin/python3.11".into()),
            "/usr/bin/python3.11" | "/usr/bin/bbox" => Some(path.into()),
            _ => None,
        }
    }

    #[test]
    fn multi_call_names_are_prefixes_as_busybox_reads_them() {
        assert!(is_multi_call_name("busybox"));
        assert!(is_multi_call_name("busybox.nosuid"));
        assert!(is_multi_call_name("toybox"));
        assert!(!is_multi_call_name("bbox"));
        assert!(!is_multi_call_name("wget"));
        assert!(!is_multi_call_name(""));
    }

    #[test]
    fn links_to_busybox_are_applets_and_other_links_resolve() {
        let c = |p: &str| classify(p, yocto(p));
        assert_eq!(
            c("/usr/bin/wget"),
            ExecPath::Applet {
                applet: "wget".into(),
                binary: "/bin/busybox.nosuid".into()
            }
        );
        assert_eq!(
            c("/bin/busybox"),
            ExecPath::MultiCall("/bin/busybox.nosuid".into())
        );
        assert_eq!(
            c("/usr/bin/python3"),
            ExecPath::Plain("/usr/bin/python3.11".into())
        );
        assert_eq!(c("/usr/bin/bbox"), ExecPath::Plain("/usr/bin/bbox".into()));
        assert_eq!(c("/usr/bin/nc"), ExecPath::Missing);
    }

    #[test]
    fn installed_binaries_are_found_resolved_once() {
        let found = installed(&yocto);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec!["/bin/busybox.nosuid".to_owned()]
        );
    }
}
