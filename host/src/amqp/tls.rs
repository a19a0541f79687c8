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
//! - `Settings::connector`: the rustls client those settings make.
//! - [`Failure`]: why a handshake failed, and what to do about it.
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

use lapin::tcp::RustlsConnector;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use std::{
    io,
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
const URL_PARAMETERS: [&str; 5] = [
    "cacertfile",
    "certfile",
    "keyfile",
    "verify",
    "server_name_indication",
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
    /// The name sent as SNI and checked against the broker's certificate:
    /// `server_name_indication`, else the URL's host.
    pub(crate) server_name: String,
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
        let file =
            |name: &str, given: &Option<PathBuf>| query(name).map(PathBuf::from).or(given.clone());
        let identity = match (
            file("certfile", &options.cert),
            file("keyfile", &options.key),
        ) {
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
        let server_name = query("server_name_indication").unwrap_or_else(|| host.to_owned());
        if ServerName::try_from(server_name.as_str()).is_err() {
            return Err(SettingsError::ServerName(server_name));
        }
        Ok(Some(Settings {
            ca: file("cacertfile", &options.ca),
            identity,
            verify,
            server_name,
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
        let config = match &self.identity {
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

    /// Why opening a connection with these settings failed, if TLS is
    /// why: the TLS library's error, from the handshake or from the first
    /// exchange after it (where a TLS 1.3 server refuses a client
    /// certificate).
    pub(crate) fn failure_of(&self, error: &io::Error) -> Option<Failure> {
        if let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(self.failure(tls));
        }
        // A TLS 1.3 server that refuses a client certificate sends its
        // alert and closes while the client already writes the AMQP
        // header: the client may read the alert, or only the reset.
        let closed = matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        );
        (closed && self.identity.is_some()).then_some(Failure::ClosedAfterHandshake)
    }

    /// Why a handshake with these settings failed, from the error the TLS
    /// library gave, for the person who chose them.
    fn failure(&self, error: &rustls::Error) -> Failure {
        let ca = self.ca.as_ref().map(|path| path.display().to_string());
        match error {
            rustls::Error::InvalidCertificate(certificate) => match certificate {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Failure::UnknownCa { ca }
                }
                CertificateError::NotValidForName => Failure::NameMismatch {
                    expected: self.server_name.clone(),
                    presented: Vec::new(),
                },
                CertificateError::NotValidForNameContext { presented, .. } => {
                    Failure::NameMismatch {
                        expected: self.server_name.clone(),
                        presented: presented.iter().map(|name| bare_name(name)).collect(),
                    }
                }
                CertificateError::Expired => Failure::Expired { days: None },
                CertificateError::ExpiredContext { time, not_after } => Failure::Expired {
                    days: Some(time.as_secs().saturating_sub(not_after.as_secs()) / 86_400),
                },
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Failure::NotYetValid
                }
                other => Failure::Other(format!("the broker's certificate is not valid: {other}")),
            },
            rustls::Error::AlertReceived(alert)
                if self.identity.is_none() && asks_for_a_certificate(*alert) =>
            {
                Failure::CertificateRequired
            }
            rustls::Error::AlertReceived(alert)
                if self.identity.is_some() && refuses_a_certificate(*alert) =>
            {
                Failure::CertificateRefused(format!("{alert:?}"))
            }
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Failure::NotTls
            }
            other => Failure::Other(other.to_string()),
        }
    }
}

/// The alerts a server sends a client that showed no certificate when
/// one is required (TLS 1.3's `certificate_required`; TLS 1.2 has none of
/// its own and fails the handshake).
fn asks_for_a_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure
    )
}

/// The alerts a server sends when it does not accept the client's
/// certificate.
fn refuses_a_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::HandshakeFailure
    )
}

/// A name as rustls presents it (`DnsName("broker")`), bare (`broker`).
fn bare_name(presented: &str) -> String {
    match presented.split_once("(\"") {
        Some((_, rest)) => rest.trim_end_matches("\")").to_owned(),
        None => presented.to_owned(),
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
            SettingsError::Url(_) => "an AMQP URL looks like amqps://user:password@host:5671/vhost",
            SettingsError::PlainUrl(_) => "use amqps:// (RabbitMQ's TLS port is 5671 by default)",
            SettingsError::CertWithoutKey
            | SettingsError::KeyWithoutCert
            | SettingsError::ExternalWithoutCertificate => {
                "give both --tls-cert and --tls-key (or certfile= and keyfile= in the URL)"
            }
            SettingsError::Verify(_) | SettingsError::ServerName(_) => "check the URL's query",
            SettingsError::File { .. } => "give a readable PEM file",
            SettingsError::NoSystemRoots => {
                "install the system's CA certificates (Debian: ca-certificates), or give the broker's CA with --tls-ca FILE"
            }
            SettingsError::Rustls(_) => "check the certificate and key files",
        }
    }
}

/// Why a TLS handshake with the broker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The broker's certificate does not chain to a trusted CA.
    #[error("the broker's certificate is not signed by a CA this client trusts ({})", .ca.as_deref().map_or("the system's CAs".to_owned(), |ca| format!("the CAs in {ca}")))]
    UnknownCa {
        /// The CA file given, if any.
        ca: Option<String>,
    },
    /// The broker's certificate is for other names.
    #[error("the broker's certificate is not for {expected:?}{}", if .presented.is_empty() { String::new() } else { format!(" but for {}", .presented.join(", ")) })]
    NameMismatch {
        /// The name the client connected by (or `server_name_indication`).
        expected: String,
        /// The names the certificate holds.
        presented: Vec<String>,
    },
    /// The broker's certificate has expired.
    #[error("the broker's certificate has expired{}", .days.map_or(String::new(), |days| format!(" ({days} days ago)")))]
    Expired {
        /// Since how many whole days, when known.
        days: Option<u64>,
    },
    /// The broker's certificate is not valid yet.
    #[error("the broker's certificate is not valid yet")]
    NotYetValid,
    /// The broker requires a client certificate and none was given.
    #[error("the broker requires a client certificate")]
    CertificateRequired,
    /// The broker refused the client certificate given.
    #[error("the broker refused this client's certificate (TLS alert {0})")]
    CertificateRefused(String),
    /// The broker closed the connection right after a handshake in which
    /// this client showed a certificate: most likely a refusal of it.
    #[error("the broker closed the connection right after the TLS handshake")]
    ClosedAfterHandshake,
    /// What answered does not speak TLS.
    #[error("the broker does not answer in TLS")]
    NotTls,
    /// Any other handshake failure, in the TLS library's words.
    #[error("TLS handshake failed: {0}")]
    Other(String),
}

impl Failure {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Failure::UnknownCa { .. } => {
                "give the CA that signed the broker's certificate with --tls-ca FILE (or cacertfile= in the URL)"
            }
            Failure::NameMismatch { .. } => {
                "connect by a name the certificate holds, or set server_name_indication=NAME in the URL"
            }
            Failure::Expired { .. } => "the broker needs a renewed certificate",
            Failure::NotYetValid => "is this machine's clock right?",
            Failure::CertificateRequired => {
                "give --tls-cert and --tls-key (or certfile= and keyfile= in the URL)"
            }
            Failure::CertificateRefused(_) => {
                "the broker must trust the CA that signed --tls-cert (its cacertfile)"
            }
            Failure::ClosedAfterHandshake => {
                "it may refuse this client's certificate: the broker must trust the CA that signed --tls-cert (its cacertfile)"
            }
            Failure::NotTls => {
                "is this a TLS port? RabbitMQ's is 5671 by default; use amqp:// for a plain one"
            }
            Failure::Other(_) => "check the broker's TLS settings",
        }
    }

    /// Whether trying again may succeed: only when the broker closed
    /// without saying why, which a broker going away does too.
    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::ClosedAfterHandshake)
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

    /// Each handshake failure a person can fix has its own words.
    #[test]
    fn handshake_failures_are_told_apart() {
        let anonymous = of_url("amqps://localhost/%2f").unwrap().unwrap();
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(10 * 86_400)),
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(7 * 86_400)),
        });
        assert_eq!(
            anonymous.failure(&expired),
            Failure::Expired { days: Some(3) }
        );
        assert!(
            anonymous
                .failure(&expired)
                .to_string()
                .contains("expired (3 days ago)")
        );
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(anonymous.failure(&unknown), Failure::UnknownCa { ca: None });
        let mismatch =
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("localhost").unwrap(),
                presented: vec!["DnsName(\"broker\")".into()],
            });
        assert_eq!(
            anonymous.failure(&mismatch),
            Failure::NameMismatch {
                expected: "localhost".into(),
                presented: vec!["broker".into()]
            }
        );
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(anonymous.failure(&required), Failure::CertificateRequired);
        let with_cert = Settings::of(
            "amqps://localhost/%2f",
            &TlsOptions {
                ca: None,
                cert: Some("c".into()),
                key: Some("k".into()),
            },
        )
        .unwrap()
        .unwrap();
        let refused = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(matches!(
            with_cert.failure(&refused),
            Failure::CertificateRefused(_)
        ));
    }
}
