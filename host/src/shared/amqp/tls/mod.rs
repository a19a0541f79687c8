//! TLS for `amqps://` URLs: which CAs to trust, which certificate to show,
//! and a failed handshake said in words a person can act on.
//!
//! # Layout
//!
//! - [`TlsOptions`]: the files given outside the URLs (`--tls-ca`,
//!   `--tls-cert`, `--tls-key`, or their environment variables).
//! - `Settings`: one URL's TLS settings: its query parameters, as
//!   RabbitMQ's URI spec names them (`cacertfile`, `certfile`, `keyfile`,
//!   `verify`, `server_name_indication`), over the options.
//! - `Settings::connector`: the rustls client those settings make, and
//!   the verifier that accepts any certificate for `verify=verify_none`.
//! - `failure`: [`Failure`], why a handshake failed, and what to do
//!   about it.
//!
//! # Why rustls with ring
//!
//! Measured by `scripts/measure-tls-stacks.sh` on a 2-core machine: a
//! program that opens one connection with lapin, as the node does,
//! built in release from a clean target:
//!
//! | stack | crates | release build | binary (stripped) |
//! | --- | --- | --- | --- |
//! | no TLS | 74 | 34 s | 2.5 MB |
//! | rustls + ring + the system's CAs (chosen) | 154 | 75 s | 4.7 MB |
//! | lapin's default: rustls + aws-lc-rs + platform verifier | 160 | 97 s | 6.8 MB |
//! | native-tls (OpenSSL, linked) | 98 | 43 s | 2.6 MB |
//!
//! OpenSSL is the cheapest to build and the smallest, but the binaries
//! then need the system's libssl to build and to run, and its errors are
//! OpenSSL's strings: telling an unknown CA from a wrong host name would
//! mean matching them. rustls reports each failure as a typed error
//! ([`Failure`] is chosen from them), needs nothing from the system but
//! its CA certificates, and lets one URL skip verification or send
//! another server name. ring builds in less time and makes a smaller
//! binary than aws-lc-rs, lapin's default provider.

mod failure;

pub use failure::Failure;
pub(crate) use failure::WRONG_PORT;
use lapin::tcp::RustlsConnector;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Once, OnceLock},
};
use tracing::warn;

/// The TLS files given outside the URLs, for every `amqps://` URL that
/// does not name its own. All empty: the system's CAs, no client
/// certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// The CA certificates (PEM) to trust for the broker's certificate, in
    /// place of the system's.
    pub ca: Option<PathBuf>,
    /// This client's certificate chain (PEM), for a broker that asks for
    /// one, and for `auth_mechanism=external` logins.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM, unencrypted).
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    /// Whether any file is given, which only an `amqps://` URL can use.
    pub fn is_empty(&self) -> bool {
        self == &TlsOptions::default()
    }
}

/// The query parameters of RabbitMQ's URI spec that set up TLS.
const URL_PARAMETERS: [&str; 8] = [
    "cacertfile",
    "certfile",
    "keyfile",
    "verify",
    "server_name_indication",
    "password",
    "depth",
    "fail_if_no_peer_cert",
];

/// Those of them this client does not take: an error, not ignored.
const UNSUPPORTED_PARAMETERS: [(&str, &str); 3] = [
    (
        "password",
        "encrypted keys are not supported: decrypt it (openssl pkey -in KEY -out PLAIN)",
    ),
    ("depth", "this client does not limit the chain's depth"),
    ("fail_if_no_peer_cert", "it is a server's setting"),
];

/// One URL's TLS settings.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The CAs to trust; `None`: the system's.
    ca: Option<PathBuf>,
    /// This client's certificate and key, if it shows one.
    identity: Option<(PathBuf, PathBuf)>,
    /// Whether the broker's certificate is verified (`verify=verify_peer`,
    /// the default).
    verify: bool,
    /// The name checked against the broker's certificate, and sent as
    /// SNI: `server_name_indication`, else the URL's host.
    pub(crate) server_name: String,
    /// Whether the name is sent (`server_name_indication=disable` does
    /// not send it).
    sni: bool,
}

impl Settings {
    /// The settings of `url`, an `amqps://` URL, with `options` for what
    /// its query does not say. `None` for an `amqp://` URL, which must then
    /// name no TLS setting: a TLS file given for a plain connection is a
    /// mistake to report, not to ignore.
    pub(crate) fn of(url: &str, options: &TlsOptions) -> Result<Option<Settings>, SettingsError> {
        let parsed = url::Url::parse(url).map_err(|err| SettingsError::Url(err.to_string()))?;
        let query = |name: &str| {
            parsed
                .query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        if !parsed.scheme().eq_ignore_ascii_case("amqps") {
            if let Some(parameter) = URL_PARAMETERS.iter().find(|name| query(name).is_some()) {
                return Err(SettingsError::PlainUrl((*parameter).to_owned()));
            }
            if !options.is_empty() {
                return Err(SettingsError::PlainUrl(
                    "--tls-ca/--tls-cert/--tls-key".into(),
                ));
            }
            return Ok(None);
        }
        let unsupported = UNSUPPORTED_PARAMETERS
            .iter()
            .find(|(name, _)| query(name).is_some());
        if let Some((name, why)) = unsupported {
            return Err(SettingsError::Unsupported(name, why));
        }
        // A certificate and its key come from one place: the URL when it
        // names either, else the options.
        let in_url = query("certfile").is_some() || query("keyfile").is_some();
        let (cert, key) = if in_url {
            let file = |name| query(name).map(PathBuf::from);
            (file("certfile"), file("keyfile"))
        } else {
            (options.cert.clone(), options.key.clone())
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(SettingsError::CertWithoutKey),
            (None, Some(_)) => return Err(SettingsError::KeyWithoutCert),
        };
        let external =
            query("auth_mechanism").is_some_and(|name| name.eq_ignore_ascii_case("external"));
        if external && identity.is_none() {
            return Err(SettingsError::ExternalWithoutCertificate);
        }
        let verify = match query("verify").as_deref() {
            None | Some("verify_peer") => true,
            Some("verify_none") => false,
            Some(other) => return Err(SettingsError::Verify(other.to_owned())),
        };
        let host = parsed.host_str().unwrap_or_default();
        // An IPv6 host comes bracketed; the certificate names the address.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (server_name, sni) = match query("server_name_indication") {
            Some(disable) if disable == "disable" => (host.to_owned(), false),
            Some(name) => (name, true),
            None => (host.to_owned(), true),
        };
        if ServerName::try_from(server_name.as_str()).is_err() {
            return Err(SettingsError::ServerName(server_name));
        }
        Ok(Some(Settings {
            ca: query("cacertfile")
                .map(PathBuf::from)
                .or(options.ca.clone()),
            identity,
            verify,
            server_name,
            sni,
        }))
    }

    /// A rustls client for these settings, reading their files now, so
    /// that a certificate renewed on disk is used from the next
    /// connection on.
    pub(crate) fn connector(&self) -> Result<RustlsConnector, SettingsError> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| SettingsError::Rustls(err.to_string()))?;
        let builder = if self.verify {
            builder.with_root_certificates(self.roots()?)
        } else {
            warn_once_unverified();
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
        };
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert, "--tls-cert")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|err| SettingsError::File {
                    what: "--tls-key",
                    path: key.clone(),
                    cause: err.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| SettingsError::Rustls(err.to_string()))?
            }
        };
        config.enable_sni = self.sni;
        Ok(RustlsConnector::from(Arc::new(config)))
    }

    /// The CAs the broker's certificate must chain to.
    fn roots(&self) -> Result<RootCertStore, SettingsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                for ca in certificates(path, "--tls-ca")? {
                    roots.add(ca).map_err(|err| SettingsError::File {
                        what: "--tls-ca",
                        path: path.clone(),
                        cause: err.to_string(),
                    })?;
                }
            }
            None => {
                roots.add_parsable_certificates(system_roots().iter().cloned());
                if roots.is_empty() {
                    return Err(SettingsError::NoSystemRoots);
                }
            }
        }
        Ok(roots)
    }
}

/// The certificates of a PEM file, at least one.
fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SettingsError> {
    let unreadable = |cause: String| SettingsError::File {
        what,
        path: path.to_owned(),
        cause,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|err| unreadable(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| unreadable(err.to_string()))?;
    if certificates.is_empty() {
        return Err(unreadable("it holds no PEM certificate".into()));
    }
    Ok(certificates)
}

/// The system's CA certificates, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// `verify=verify_none` is said once per process, at the first
/// connection that uses it.
fn warn_once_unverified() {
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        warn!(
            "TLS without verifying the broker's certificate (verify=verify_none): anyone on the network path can read and change this connection"
        );
    });
}

/// Accepts any certificate, for `verify=verify_none`; checks only that
/// the handshake is signed by the key the certificate names, as TLS
/// requires.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS settings that cannot make a connection, found before connecting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    #[error("not a URL: {0}")]
    Url(String),
    #[error("{0} is a TLS setting, and this URL is amqp:// (plain)")]
    PlainUrl(String),
    #[error("a client certificate (--tls-cert or certfile) is given without its key")]
    CertWithoutKey,
    #[error("a client key (--tls-key or keyfile) is given without its certificate")]
    KeyWithoutCert,
    #[error("auth_mechanism=external logs in with a client certificate, and none is given")]
    ExternalWithoutCertificate,
    #[error("{0}= is not supported: {1}")]
    Unsupported(&'static str, &'static str),
    #[error("verify={0:?} is neither verify_peer nor verify_none")]
    Verify(String),
    #[error("server_name_indication={0:?} is not a host name or an IP address")]
    ServerName(String),
    #[error("cannot use {path} ({what}): {cause}")]
    File {
        what: &'static str,
        path: PathBuf,
        cause: String,
    },
    #[error("this system has no CA certificates to verify the broker with")]
    NoSystemRoots,
    #[error("cannot set up TLS: {0}")]
    Rustls(String),
}

impl SettingsError {
    /// What to do about it.
    pub(crate) fn hint(&self) -> &'static str {
        match self {
            SettingsError::Url(_) => super::URL_FORM,
            SettingsError::PlainUrl(_) => {
                "use amqps:// for a TLS port (RabbitMQ's is 5671 by default)"
            }
            SettingsError::CertWithoutKey
            | SettingsError::KeyWithoutCert
            | SettingsError::ExternalWithoutCertificate => {
                "give both --tls-cert and --tls-key (or certfile= and keyfile= in the URL)"
            }
            SettingsError::Verify(_)
            | SettingsError::ServerName(_)
            | SettingsError::Unsupported(..) => "check the URL's query",
            SettingsError::File { .. } => "give a readable PEM file",
            SettingsError::NoSystemRoots => {
                "install the system's CA certificates (Debian: ca-certificates), or give the broker's CA with --tls-ca FILE"
            }
            SettingsError::Rustls(_) => "check the certificate and key files",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of_url(url: &str) -> Result<Option<Settings>, SettingsError> {
        Settings::of(url, &TlsOptions::default())
    }

    /// The URL's own parameters win over the flags; a plain URL takes
    /// none.
    #[test]
    fn url_parameters_over_options_and_none_for_plain_urls() {
        let options = TlsOptions {
            ca: Some("flag-ca.pem".into()),
            cert: Some("flag-cert.pem".into()),
            key: Some("flag-key.pem".into()),
        };
        let url = "amqps://u:p@broker.example:5671/%2f?cacertfile=%2Fetc%2Fca.pem&server_name_indication=rabbit.internal";
        let settings = Settings::of(url, &options).unwrap().unwrap();
        assert_eq!(settings.ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            settings.identity,
            Some(("flag-cert.pem".into(), "flag-key.pem".into()))
        );
        // A certificate named in the URL takes its key from the URL too,
        // never from the flags.
        let mixed = Settings::of("amqps://h/%2f?certfile=url-cert.pem", &options).unwrap_err();
        assert!(matches!(mixed, SettingsError::CertWithoutKey), "{mixed}");
        assert!(settings.verify);
        assert_eq!(settings.server_name, "rabbit.internal");

        assert!(of_url("amqp://127.0.0.1/%2f").unwrap().is_none());
        let plain = of_url("amqp://127.0.0.1/%2f?cacertfile=ca.pem").unwrap_err();
        assert!(matches!(plain, SettingsError::PlainUrl(_)), "{plain}");
        let flags_on_plain = Settings::of("amqp://127.0.0.1/%2f", &options).unwrap_err();
        assert!(matches!(flags_on_plain, SettingsError::PlainUrl(_)));
    }

    #[test]
    fn bad_settings_are_named() {
        let host = of_url("amqps://[::1]:5671/%2f").unwrap().unwrap();
        assert_eq!(host.server_name, "::1");
        let none = of_url("amqps://h/%2f?verify=verify_none").unwrap().unwrap();
        assert!(!none.verify);
        assert!(matches!(
            of_url("amqps://h/%2f?verify=yes"),
            Err(SettingsError::Verify(_))
        ));
        assert!(matches!(
            of_url("amqps://h/%2f?certfile=c.pem"),
            Err(SettingsError::CertWithoutKey)
        ));
        assert!(matches!(
            of_url("amqps://h/%2f?keyfile=k.pem"),
            Err(SettingsError::KeyWithoutCert)
        ));
        assert!(matches!(
            of_url("amqps://h/%2f?auth_mechanism=external"),
            Err(SettingsError::ExternalWithoutCertificate)
        ));
        assert!(matches!(
            of_url("amqps://h/%2f?password=secret"),
            Err(SettingsError::Unsupported("password", _))
        ));
        let unnamed = of_url("amqps://h/%2f?server_name_indication=disable")
            .unwrap()
            .unwrap();
        assert_eq!((unnamed.server_name.as_str(), unnamed.sni), ("h", false));
        assert!(matches!(
            of_url("amqps://h/%2f?server_name_indication=a%20b"),
            Err(SettingsError::ServerName(_))
        ));
        let missing = of_url("amqps://h/%2f?cacertfile=/nonexistent/ca.pem")
            .unwrap()
            .unwrap()
            .connector()
            .map(drop)
            .expect_err("a missing CA file is an error");
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
    }
}
