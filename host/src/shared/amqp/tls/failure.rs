//! Why a TLS connection to the broker failed, told from the TLS
//! library's typed errors, with what to do about it.

use super::Settings;
use rustls::{AlertDescription, CertificateError};
use std::io;

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
    /// this client showed a certificate: most likely a refusal of it,
    /// whose alert the client did not get to read.
    #[error("the broker closed the connection right after the TLS handshake")]
    ClosedAfterHandshake,
    /// What answered does not speak TLS.
    #[error("the broker does not answer in TLS")]
    NotTls,
    /// Any other handshake failure, in the TLS library's words.
    #[error("TLS handshake failed: {0}")]
    Other(String),
}

/// The hint for a port that is not what the URL's scheme says.
pub(crate) const WRONG_PORT: &str = "amqps:// is for the broker's TLS port (RabbitMQ's is 5671 by default), amqp:// for its plain one (5672)";

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
                "it most likely refuses this client's certificate: the broker must trust the CA that signed --tls-cert (its cacertfile)"
            }
            Failure::NotTls => WRONG_PORT,
            Failure::Other(_) => "check the broker's TLS settings (versions, ciphers)",
        }
    }

    /// Why opening a connection with `settings` failed, if TLS is why:
    /// the TLS library's error, from the handshake or from the first
    /// exchange after it (where a TLS 1.3 server refuses a client
    /// certificate).
    pub(crate) fn of(settings: &Settings, error: &io::Error) -> Option<Failure> {
        if let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(Failure::of_tls(settings, tls));
        }
        // A TLS 1.3 server that refuses a client certificate sends its
        // alert and closes while the client already writes the AMQP
        // header: the client may read the alert, or only the reset. Either
        // way it is not worth trying again.
        let closed = matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        );
        (closed && settings.identity.is_some()).then_some(Failure::ClosedAfterHandshake)
    }

    /// Why a handshake with `settings` failed, from the error the TLS
    /// library gave, for the person who chose them.
    fn of_tls(settings: &Settings, error: &rustls::Error) -> Failure {
        let ca = settings.ca.as_ref().map(|path| path.display().to_string());
        match error {
            rustls::Error::InvalidCertificate(certificate) => match certificate {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Failure::UnknownCa { ca }
                }
                CertificateError::NotValidForName => Failure::NameMismatch {
                    expected: settings.server_name.clone(),
                    presented: Vec::new(),
                },
                CertificateError::NotValidForNameContext { presented, .. } => {
                    Failure::NameMismatch {
                        expected: settings.server_name.clone(),
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
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
                if settings.identity.is_none() =>
            {
                Failure::CertificateRequired
            }
            rustls::Error::AlertReceived(alert)
                if settings.identity.is_some() && refuses_a_certificate(*alert) =>
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

/// The alerts a server sends when it does not accept the client's
/// certificate. Not `handshake_failure`, which a server also sends for
/// versions or ciphers it does not share.
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
    )
}

/// A name as rustls presents it (`DnsName("broker")`,
/// `IpAddress(10.0.0.1)`), bare (`broker`, `10.0.0.1`). rustls gives the
/// names only as text; a form it does not have yet is shown as it is.
fn bare_name(presented: &str) -> String {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::amqp::tls::TlsOptions;
    use rustls::pki_types::{ServerName, UnixTime};
    use std::time::Duration;

    fn settings(options: &TlsOptions) -> Settings {
        Settings::of("amqps://localhost/%2f", options)
            .unwrap()
            .unwrap()
    }

    /// Each handshake failure a person can fix has its own words.
    #[test]
    fn handshake_failures_are_told_apart() {
        let anonymous = settings(&TlsOptions::default());
        let failure = |error| Failure::of_tls(&anonymous, &error);
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(10 * 86_400)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(7 * 86_400)),
        });
        assert_eq!(failure(expired.clone()), Failure::Expired { days: Some(3) });
        assert!(
            failure(expired)
                .to_string()
                .contains("expired (3 days ago)")
        );
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(failure(unknown), Failure::UnknownCa { ca: None });
        let mismatch =
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("localhost").unwrap(),
                presented: vec!["DnsName(\"broker\")".into(), "IpAddress(10.0.0.1)".into()],
            });
        assert_eq!(
            failure(mismatch),
            Failure::NameMismatch {
                expected: "localhost".into(),
                presented: vec!["broker".into(), "10.0.0.1".into()]
            }
        );
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(failure(required), Failure::CertificateRequired);
        let handshake = rustls::Error::AlertReceived(AlertDescription::HandshakeFailure);
        assert!(matches!(failure(handshake), Failure::Other(_)));

        let with_cert = settings(&TlsOptions {
            ca: None,
            cert: Some("c".into()),
            key: Some("k".into()),
        });
        let refused = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(matches!(
            Failure::of_tls(&with_cert, &refused),
            Failure::CertificateRefused(_)
        ));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            Failure::of(&with_cert, &reset),
            Some(Failure::ClosedAfterHandshake)
        );
        assert_eq!(Failure::of(&anonymous, &reset), None);
    }
}
