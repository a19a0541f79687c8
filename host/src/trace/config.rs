//! Where and how spans are exported, read from the standard `OTEL_*`
//! environment variables, so a node or a center is configured as any
//! OpenTelemetry SDK is. Export is off unless an OTLP endpoint is set.

use std::{collections::HashMap, time::Duration};
use url::Url;

/// The port of an OTLP/HTTP collector.
const DEFAULT_PORT: u16 = 4318;
/// Spans waiting for export, at most; more are dropped
/// (`OTEL_BSP_MAX_QUEUE_SIZE`).
const MAX_QUEUE: usize = 2048;
/// Spans in one export request, at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
const MAX_BATCH: usize = 512;
/// How long spans wait to be exported (`OTEL_BSP_SCHEDULE_DELAY`).
const SCHEDULE_DELAY: Duration = Duration::from_secs(5);
/// How long one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// The collector's address and the path spans are posted to.
    pub endpoint: Url,
    /// Extra request headers, such as an API key.
    pub headers: Vec<(String, String)>,
    /// The resource's attributes, `service.name` first.
    pub resource: Vec<(String, String)>,
    pub max_queue: usize,
    pub max_batch: usize,
    pub schedule_delay: Duration,
    pub timeout: Duration,
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
    #[error("{variable}={value:?} is not a number")]
    NotANumber {
        variable: &'static str,
        value: String,
    },
    #[error("{variable}={value:?} is not a list of key=value pairs separated by commas")]
    NotPairs {
        variable: &'static str,
        value: String,
    },
}

impl ExportConfig {
    /// The export the process's environment asks for, `None` when it asks
    /// for none.
    pub fn from_env(service: &str) -> Result<Option<Self>, ConfigError> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(name, _)| name.starts_with("OTEL_"))
            .collect();
        Self::from_vars(service, |name| env.get(name).cloned())
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
        if set("OTEL_SDK_DISABLED").is_some_and(|(_, value)| value.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|(_, value)| value == "none")
        {
            return Ok(None);
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
        let mut headers = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some((variable, value)) = set(name) {
                headers.extend(pairs(variable, &value)?);
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
        Ok(Some(ExportConfig {
            endpoint,
            headers,
            resource,
            max_queue: number("OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE as u64)?.max(1) as usize,
            max_batch: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", MAX_BATCH as u64)?.max(1) as usize,
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", SCHEDULE_DELAY)?,
            timeout: millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", EXPORT_TIMEOUT)
                .and_then(|default| millis("OTEL_EXPORTER_OTLP_TIMEOUT", default))?,
        }))
    }
}

/// The URL spans are posted to. The signal-neutral variable names the
/// collector, and `/v1/traces` is added to its path; the traces variable
/// is used as it is.
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
    // `Url` forgets a port that is the scheme's default (80), so whether
    // one was given is read from the text.
    let authority = value
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    let host_end = authority.rfind(']').unwrap_or(0);
    if !authority[host_end..].contains(':') {
        let _ = url.set_port(Some(DEFAULT_PORT));
    }
    if add_path {
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// `key=value,key=value`, each part percent-decoded.
fn pairs(variable: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let refused = || ConfigError::NotPairs {
        variable,
        value: value.to_owned(),
    };
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(refused)?;
            let decode = |text: &str| {
                url::form_urlencoded::parse(format!("x={}", text.trim()).as_bytes())
                    .next()
                    .map(|(_, decoded)| decoded.into_owned())
                    .ok_or_else(refused)
            };
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
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
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, x=1"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            config.endpoint.as_str(),
            "http://collector:4318/base/v1/traces"
        );
        assert_eq!(
            config.headers,
            [("api-key".into(), "a b".into()), ("x".into(), "1".into())]
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
    fn the_traces_endpoint_is_used_as_it_is_and_the_service_name_wins() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:9999/t",
            ),
            ("OTEL_SERVICE_NAME", "node-7"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.endpoint.as_str(), "http://127.0.0.1:9999/t");
        assert_eq!(config.resource, [("service.name".into(), "node-7".into())]);
    }

    #[test]
    fn what_cannot_be_followed_is_refused_with_the_variable_named() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let cases = [
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector")],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")],
            vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
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
