//! TLS to the broker: rustls with the ring provider (no OpenSSL, no aws-lc), the
//! broker verified against a CA of our own, optionally a client certificate (mutual
//! TLS). Every file problem is an error naming the file.

use std::path::PathBuf;

/// The PEM files of a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The broker's certificate must chain to a certificate in this file.
    pub ca: PathBuf,
    /// Our certificate chain and its key, for mutual TLS.
    pub client: Option<ClientCertificate>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[cfg(feature = "tls")]
pub use self::client::{TlsError, client_config, transport};

#[cfg(feature = "tls")]
mod client {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::TlsFiles;

    /// Why the TLS files cannot be used.
    #[derive(Debug, thiserror::Error)]
    pub enum TlsError {
        #[error("{}: cannot read {what}", path.display())]
        Read {
            what: &'static str,
            path: PathBuf,
            #[source]
            source: std::io::Error,
        },
        #[error("{}: bad PEM", path.display())]
        Pem {
            path: PathBuf,
            #[source]
            source: pem::Error,
        },
        #[error("{}: holds no PEM certificate", path.display())]
        NoCertificate { path: PathBuf },
        #[error("{}: not a usable CA certificate", path.display())]
        CaCertificate {
            path: PathBuf,
            #[source]
            source: rustls::Error,
        },
        #[error("{}: no usable private key", path.display())]
        PrivateKey {
            path: PathBuf,
            #[source]
            source: pem::Error,
        },
        #[error("{}: does not match the certificate", path.display())]
        KeyMismatch {
            path: PathBuf,
            #[source]
            source: rustls::Error,
        },
        #[error("TLS setup")]
        Provider(#[source] rustls::Error),
    }

    fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
        crate::limits::read_capped(
            path,
            crate::limits::MAX_PEM_FILE_BYTES,
            "MAX_PEM_FILE_BYTES",
        )
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    }

    fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let pem = read("certificates", path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                path: path.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: path.to_owned(),
            });
        }
        Ok(certs)
    }

    /// The rustls client configuration of `files`.
    pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(&files.ca)? {
            roots.add(cert).map_err(|source| TlsError::CaCertificate {
                path: files.ca.clone(),
                source,
            })?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots);
        let Some(client) = &files.client else {
            return Ok(builder.with_no_client_auth());
        };
        let chain = read_certs(&client.cert)?;
        let key_pem = read("the private key", &client.key)?;
        let key =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::PrivateKey {
                path: client.key.clone(),
                source,
            })?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::KeyMismatch {
                path: client.key.clone(),
                source,
            })
    }

    /// [`client_config`] as a rumqttc transport (for MQTT 3.1.1 and 5 clients alike).
    pub fn transport(files: &TlsFiles) -> Result<rumqttc::Transport, TlsError> {
        let config = client_config(files)?;
        Ok(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
        ))
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::error::Error as _;
    use std::path::Path;

    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("edgearmor-mqtt-tls-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A CA, and a client certificate with its key signed by it.
    fn pki(dir: &Scratch) -> (PathBuf, PathBuf, PathBuf) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["gw-1".into()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("client cert");
        (
            dir.write("ca.pem", &ca_cert.pem()),
            dir.write("client.pem", &cert.pem()),
            dir.write("client.key", &key.serialize_pem()),
        )
    }

    fn files(ca: &Path, client: Option<(&Path, &Path)>) -> TlsFiles {
        TlsFiles {
            ca: ca.to_owned(),
            client: client.map(|(cert, key)| ClientCertificate {
                cert: cert.to_owned(),
                key: key.to_owned(),
            }),
        }
    }

    #[test]
    fn a_ca_and_a_client_certificate_make_a_config() {
        let dir = Scratch::new("ok");
        let (ca, cert, key) = pki(&dir);
        assert!(client_config(&files(&ca, None)).is_ok());
        let mutual = client_config(&files(&ca, Some((&cert, &key)))).expect("mutual TLS");
        assert!(mutual.client_auth_cert_resolver.has_certs());
        assert!(transport(&files(&ca, None)).is_ok());
    }

    #[test]
    fn unusable_files_are_named_with_their_cause() {
        let dir = Scratch::new("bad");
        let (ca, cert, key) = pki(&dir);
        let not_pem = dir.write("not.pem", "hello\n");
        let other_key = dir.write(
            "other.key",
            &rcgen::KeyPair::generate().expect("key").serialize_pem(),
        );
        let missing = Path::new("/nonexistent/ca.pem");
        let cases: Vec<(TlsFiles, String)> = vec![
            (
                files(missing, None),
                "/nonexistent/ca.pem: cannot read certificates".into(),
            ),
            (
                files(&not_pem, None),
                format!("{}: holds no PEM certificate", not_pem.display()),
            ),
            (
                files(&ca, Some((&cert, &not_pem))),
                format!("{}: no usable private key", not_pem.display()),
            ),
            (
                files(&ca, Some((&cert, Path::new("/nonexistent/key")))),
                "/nonexistent/key: cannot read the private key".into(),
            ),
            (
                files(&ca, Some((&key, &key))),
                format!("{}: holds no PEM certificate", key.display()),
            ),
            (
                files(&ca, Some((&cert, &other_key))),
                format!("{}: does not match the certificate", other_key.display()),
            ),
        ];
        for (files, message) in cases {
            let err = client_config(&files).expect_err(&message);
            assert_eq!(err.to_string(), message);
            if message.contains("cannot read") {
                assert!(
                    err.source().is_some_and(|s| s.is::<std::io::Error>()),
                    "{err:?}"
                );
            }
        }
    }
}
