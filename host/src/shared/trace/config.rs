//! Where and how spans are exported, read from the standard `OTEL_*`
//! environment variables, so a node or a center is configured as any
//! OpenTelemetry SDK is. Export is off unless an OTLP endpoint is set.

use std::time::Duration;
use url::Url;

/// Spans waiting for export, at most; more are dropped
/// (`OTEL_BSP_MAX_QUEUE_SIZE`).
const MAX_QUEUE: usize = 2048;
/// Spans in one export request, at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
const MAX_BATCH: usize = 512;
/// How long spans wait to be exported (`OTEL_BSP_SCHEDULE_DELAY`).
pub const SCHEDULE_DELAY: Duration = Duration::from_secs(5);
/// How long one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest queue taken: a bigger one holds more memory than spans
/// are worth.
const QUEUE_CEILING: usize = 1 << 20;
/// The shortest schedule delay taken: none at all would spin.
const SHORTEST_DELAY: Duration = Duration::from_millis(1);

/// How spans are exported.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// The collector's address and the path spans are posted to.
    pub endpoint: Url,
    /// Extra request headers, such as an API key: names are HTTP tokens,
    /// values hold no line breaks.
    pub headers: Vec<(String, String)>,
    /// The resource's attributes, `service.name` first.
    pub resource: Vec<(String, String)>,
    pub max_queue: usize,
    pub max_batch: usize,
    pub schedule_delay: Duration,
    pub timeout: Duration,
}

/// Header values hidden: they may hold API keys.
impl std::fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("ExportConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("headers", &headers)
            .field("resource", &self.resource)
            .field("max_queue", &self.max_queue)
            .field("max_batch", &self.max_batch)
            .field("schedule_delay", &self.schedule_delay)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A setting that cannot be followed. A node or center refuses to start
/// rather than run without the traces its operator asked for.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable}={value:?} is not a URL: {cause}")]
    BadUrl {
        variable: &'static str,
        value: String,
        cause: url::ParseError,
    },
    #[error(
        "{variable}={value:?}: only http:// endpoints are supported; run a collector beside the node (say http://localhost:4318) to forward spans over TLS"
    )]
    NotHttp {
        variable: &'static str,
        value: String,
    },
    #[error(
        "{variable}={value:?} is not supported: set it to http/protobuf (the OpenTelemetry default), or leave it unset"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error("{variable}={value:?}: set it to otlp, or to none for no traces")]
    Exporter {
        variable: &'static str,
        value: String,
    },
    #[error("{variable}={value:?} is not a number")]
    NotANumber {
        variable: &'static str,
        value: String,
    },
    // The value is not shown: it may hold an API key.
    #[error("{variable} is not a list of key=value pairs separated by commas")]
    NotPairs { variable: &'static str },
    #[error(
        "{variable}: header {name:?} is not a name HTTP allows, or its value holds a line break"
    )]
    BadHeader {
        variable: &'static str,
        name: String,
    },
}

impl ExportConfig {
    /// The export the process's environment asks for, `None` when it asks
    /// for none.
    pub fn from_env(service: &str) -> Result<Option<Self>, ConfigError> {
        // Read by name: a variable that is not UTF-8 is as good as unset,
        // where iterating over them all would panic on one.
        Self::from_vars(service, |name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading the variables through
    /// `var`.
    pub fn from_vars(
        service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let set = |name: &'static str| {
            var(name)
                .filter(|value| !value.trim().is_empty())
                .map(|value| (name, value.trim().to_owned()))
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|(_, value)| value.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match set("OTEL_TRACES_EXPORTER") {
            Some((_, value)) if value == "none" => return Ok(None),
            Some((variable, value)) if value != "otlp" => {
                return Err(ConfigError::Exporter { variable, value });
            }
            _ => {}
        }
        let endpoint = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some((variable, value)), _) => endpoint(variable, &value, false)?,
            (None, Some((variable, value))) => endpoint(variable, &value, true)?,
            (None, None) => return Ok(None),
        };
        if let Some((variable, value)) = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .filter(|(_, value)| value != "http/protobuf")
        {
            return Err(ConfigError::Protocol { variable, value });
        }
        // The traces variable's headers replace the general one's of the
        // same name.
        let mut headers: Vec<(String, String)> = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some((variable, value)) = set(name) {
                for (key, value) in pairs(variable, &value)? {
                    if !is_token(&key) || value.contains(['\r', '\n', '\0']) {
                        return Err(ConfigError::BadHeader {
                            variable,
                            name: key,
                        });
                    }
                    headers.retain(|(have, _)| !have.eq_ignore_ascii_case(&key));
                    headers.push((key, value));
                }
            }
        }
        let mut resource = vec![("service.name".to_owned(), service.to_owned())];
        if let Some((variable, value)) = set("OTEL_RESOURCE_ATTRIBUTES") {
            resource.extend(pairs(variable, &value)?);
        }
        if let Some((_, name)) = set("OTEL_SERVICE_NAME") {
            resource.retain(|(key, _)| key != "service.name");
            resource.insert(0, ("service.name".to_owned(), name));
        }
        let number = |name: &'static str, default: u64| match set(name) {
            Some((variable, value)) => value
                .parse::<u64>()
                .map_err(|_| ConfigError::NotANumber { variable, value }),
            None => Ok(default),
        };
        let millis = |name: &'static str, default: Duration| {
            number(name, default.as_millis() as u64).map(Duration::from_millis)
        };
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE as u64)?
            .clamp(1, QUEUE_CEILING as u64) as usize;
        // A batch never waits for more spans than the queue holds.
        let max_batch = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", MAX_BATCH as u64)?
            .clamp(1, max_queue as u64) as usize;
        let general_timeout = millis("OTEL_EXPORTER_OTLP_TIMEOUT", EXPORT_TIMEOUT)?;
        Ok(Some(ExportConfig {
            endpoint,
            headers,
            resource,
            max_queue,
            max_batch,
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", SCHEDULE_DELAY)?.max(SHORTEST_DELAY),
            timeout: millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", general_timeout)?,
        }))
    }
}

/// The URL spans are posted to. The signal-neutral variable names the
/// collector, and `/v1/traces` is added to its path; the traces variable
/// is used as it is. A URL without a port means port 80, as for any URL.
fn endpoint(variable: &'static str, value: &str, add_path: bool) -> Result<Url, ConfigError> {
    let mut url = Url::parse(value).map_err(|cause| ConfigError::BadUrl {
        variable,
        value: value.to_owned(),
        cause,
    })?;
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err(ConfigError::NotHttp {
            variable,
            value: value.to_owned(),
        });
    }
    if add_path {
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// `key=value,key=value`, each part percent-decoded (and only that: a
/// `+` stays a `+`, as in a base64 key).
fn pairs(variable: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let refused = || ConfigError::NotPairs { variable };
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(refused)?;
            let decode = |text: &str| percent_decoded(text.trim()).ok_or_else(refused);
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

/// `text` with each `%XX` replaced by its byte; `None` when that is not
/// UTF-8 or a `%` is not followed by two hex digits.
fn percent_decoded(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        if byte == b'%' {
            let digits = std::str::from_utf8(after.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(digits, 16).ok()?);
            rest = &after[2..];
        } else {
            bytes.push(byte);
            rest = after;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Whether `name` is an HTTP token, as a header name must be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<ExportConfig>, ConfigError> {
        ExportConfig::from_vars("compute", |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn export_is_off_without_an_endpoint_or_when_disabled() {
        assert_eq!(config(&[]), Ok(None));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(config(&[endpoint, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(
            config(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(None)
        );
    }

    #[test]
    fn the_standard_variables_set_the_export() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector/base/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b+c%3D, x=1"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.endpoint.as_str(), "http://collector/base/v1/traces");
        assert_eq!(
            config.headers,
            [
                ("api-key".into(), "a b+c=".into()),
                ("x".into(), "1".into())
            ]
        );
        assert_eq!(
            config.resource[0],
            ("service.name".into(), "compute".into())
        );
        assert_eq!(config.resource[1].0, "deployment.environment");
        assert_eq!(config.schedule_delay, Duration::from_millis(100));
        assert_eq!(config.max_queue, MAX_QUEUE);
    }

    #[test]
    fn the_traces_variables_win_over_the_general_ones() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:9999/t",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "key=general,other=kept"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "Key=traces"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2000"),
            ("OTEL_SERVICE_NAME", "node-7"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.endpoint.as_str(), "http://127.0.0.1:9999/t");
        assert_eq!(
            config.headers,
            [
                ("other".into(), "kept".into()),
                ("Key".into(), "traces".into())
            ]
        );
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.resource, [("service.name".into(), "node-7".into())]);
    }

    #[test]
    fn settings_that_would_spin_or_exhaust_memory_are_bounded() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_BSP_SCHEDULE_DELAY", "0"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "18446744073709551615"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "18446744073709551615"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.schedule_delay, SHORTEST_DELAY);
        assert_eq!(config.max_queue, QUEUE_CEILING);
        assert_eq!(config.max_batch, QUEUE_CEILING);
    }

    #[test]
    fn a_bad_header_is_named_and_its_value_never_shown() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let injected = config(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_HEADERS", "k=secret%0D%0AX: 1"),
        ]);
        let err = injected.unwrap_err().to_string();
        assert!(err.contains("\"k\"") && !err.contains("secret"), "{err}");
        let unpaired = config(&[endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "secret")]);
        let err = unpaired.unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        let config = config(&[endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "k=secret")]);
        let shown = format!("{:?}", config.unwrap().unwrap());
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn what_cannot_be_followed_is_refused_with_the_variable_named() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let cases = [
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector")],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")],
            vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            vec![endpoint, ("OTEL_TRACES_EXPORTER", "console")],
            vec![endpoint, ("OTEL_BSP_MAX_QUEUE_SIZE", "many")],
            vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals")],
        ];
        for vars in cases {
            let err = config(&vars).unwrap_err().to_string();
            let named = vars.last().unwrap().0;
            assert!(err.starts_with(named), "{err}");
        }
    }
}
