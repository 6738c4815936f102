//! MQTT user name and password. The password lives in a file (so it stays out of the
//! configuration, the command line and `ps`): its first line is the password, without
//! the line ending (`\n` or `\r\n`); whatever follows is ignored.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why the credentials cannot be used. Never holds the password itself.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{}: cannot read the password", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the password (the file's first line) is empty", path.display())]
    Empty { path: PathBuf },
}

/// A user name with its password, for `MqttOptions::set_credentials`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `None` without a user name; the password is read from `password_file`, or empty
    /// without one.
    pub fn load(
        username: Option<&str>,
        password_file: Option<&Path>,
    ) -> Result<Option<Self>, CredentialsError> {
        let Some(username) = username else {
            return Ok(None);
        };
        let password = match password_file {
            Some(path) => read_password_file(path)?,
            None => String::new(),
        };
        Ok(Some(Self {
            username: username.to_owned(),
            password,
        }))
    }
}

/// The first line of `path`, without its line ending.
pub fn read_password_file(path: &Path) -> Result<String, CredentialsError> {
    let bytes = crate::limits::read_capped(
        path,
        crate::limits::MAX_PASSWORD_FILE_BYTES,
        "MAX_PASSWORD_FILE_BYTES",
    )
    .map_err(|source| CredentialsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let password = first_line(&text);
    if password.is_empty() {
        return Err(CredentialsError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

/// Up to the first `\n`, without a `\r` before it.
fn first_line(text: &str) -> &str {
    let line = text.split('\n').next().unwrap_or_default();
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in a directory of its own, removed when dropped.
    struct TempFile {
        dir: PathBuf,
        path: PathBuf,
    }

    impl TempFile {
        fn with(name: &str, contents: &[u8]) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "edgearmor-mqtt-credentials-{}-{name}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("mqtt.pass");
            std::fs::write(&path, contents).expect("write");
            Self { dir, path }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn the_password_is_the_first_line() {
        for (name, contents, password) in [
            ("lf", &b"s3cret\n"[..], "s3cret"),
            ("crlf", b"s3cret\r\nsecond line\r\n", "s3cret"),
            ("no-newline", b"s3cret", "s3cret"),
            ("more-lines", b"s3cret\nrotated-next\n", "s3cret"),
            ("spaces-kept", b" pass word \n", " pass word "),
        ] {
            let file = TempFile::with(name, contents);
            assert_eq!(
                read_password_file(&file.path).expect(name),
                password,
                "{name}"
            );
        }
    }

    #[test]
    fn an_empty_password_is_an_error_naming_the_file() {
        for (name, contents) in [
            ("empty", &b""[..]),
            ("blank", b"\n"),
            ("blank-crlf", b"\r\nx"),
        ] {
            let file = TempFile::with(name, contents);
            let err = read_password_file(&file.path).expect_err(name);
            assert!(
                matches!(err, CredentialsError::Empty { .. }),
                "{name}: {err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "{}: the password (the file's first line) is empty",
                    file.path.display()
                )
            );
        }
    }

    #[test]
    fn an_unreadable_file_is_named_with_its_cause() {
        let err = read_password_file(Path::new("/nonexistent/mqtt.pass")).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "/nonexistent/mqtt.pass: cannot read the password"
        );
        let source = std::error::Error::source(&err).expect("chained");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn credentials_need_a_user_name_and_never_show_the_password() {
        assert_eq!(Credentials::load(None, None).expect("none"), None);
        let file = TempFile::with("load", b"hunter2\n");
        let c = Credentials::load(Some("gw-12"), Some(&file.path))
            .expect("readable")
            .expect("a user");
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("gw-12", "hunter2")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        let anonymous_password = Credentials::load(Some("gw-12"), None)
            .expect("no file")
            .expect("a user");
        assert_eq!(anonymous_password.password, "");
    }
}
