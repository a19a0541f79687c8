//! One line per call, as `center` and `compute call` print it: text for a
//! person, or JSON with `--json`.

use crate::{
    center::{CallError, Reply},
    shared::sandbox::{ComputeError, ComputeModule},
};

/// What one call came to, whoever made it: the center through the broker,
/// or `compute call` in the sandbox.
pub(super) struct Outcome<'a> {
    /// The function that answered, when known (a timeout names none).
    function: Option<&'a str>,
    /// The exact module version that answered, when known.
    module: Option<&'a str>,
    /// The output, or the error as `kind: message`.
    result: Result<&'a [u8], String>,
}

impl<'a> Outcome<'a> {
    /// A call made through the broker.
    pub(super) fn of_call(result: &'a Result<Reply, CallError>) -> Self {
        let origin = match result {
            Ok(reply) => Some(&reply.origin),
            Err(CallError::Remote { origin, .. }) => Some(origin),
            Err(_) => None,
        };
        Outcome {
            function: origin.and_then(|origin| origin.function.as_deref()),
            module: origin.and_then(|origin| origin.module.as_deref()),
            result: match result {
                Ok(reply) => Ok(&reply.body),
                Err(err) => Err(err.to_string()),
            },
        }
    }

    /// `module` run in this process, as `compute call` does.
    pub(super) fn of_compute(
        module: &'a ComputeModule,
        result: &'a Result<Vec<u8>, ComputeError>,
    ) -> Self {
        Outcome {
            function: Some(module.name()),
            module: Some(module.digest()),
            result: match result {
                Ok(output) => Ok(output),
                Err(err) => Err(format!("{}: {err}", err.kind().as_str())),
            },
        }
    }

    /// Whether the call failed.
    pub(super) fn failed(&self) -> bool {
        self.result.is_err()
    }

    /// The line printed for `input`: JSON with `json`, else text.
    pub(super) fn line(&self, json: bool, input: &[u8]) -> String {
        let input = String::from_utf8_lossy(input);
        if json {
            self.json_line(&input)
        } else {
            self.text_line(&input)
        }
    }

    /// `increase(10) = 11`, or `increase(x) failed: bad-request: ...`. The
    /// function's name comes from the reply; without one (a timeout, or a
    /// node that does not send `x-function`) it reads `compute`.
    fn text_line(&self, input: &str) -> String {
        let function = self.function.unwrap_or("compute");
        match &self.result {
            Ok(output) => format!("{function}({input}) = {}", String::from_utf8_lossy(output)),
            Err(err) => format!("{function}({input}) failed: {err}"),
        }
    }

    /// `{"input":"10","output":"11","module":"sha256:..."}` or
    /// `{"input":"x","error":"bad-request: ...","module":"sha256:..."}`;
    /// `module` only when the node named its module version.
    fn json_line(&self, input: &str) -> String {
        let mut value = match &self.result {
            Ok(output) => serde_json::json!({
                "input": input,
                "output": String::from_utf8_lossy(output),
            }),
            Err(err) => serde_json::json!({ "input": input, "error": err }),
        };
        if let Some(module) = self.module {
            value["module"] = module.into();
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;
    use crate::center::{CallError, Origin, Reply};
    use std::time::Duration;

    #[test]
    fn lines_name_the_function_and_the_error() {
        let origin = Origin {
            function: Some("increase".into()),
            module: Some("sha256:ab".into()),
        };
        let ok = Ok(Reply {
            body: b"11".to_vec(),
            origin: origin.clone(),
        });
        assert_eq!(
            Outcome::of_call(&ok).line(false, b"10"),
            "increase(10) = 11"
        );
        assert_eq!(
            Outcome::of_call(&ok).line(true, b"10"),
            r#"{"input":"10","output":"11","module":"sha256:ab"}"#
        );

        let failed = Err(CallError::Remote {
            kind: "bad-request".into(),
            message: "not a number".into(),
            origin,
        });
        assert_eq!(
            Outcome::of_call(&failed).line(false, b"x"),
            "increase(x) failed: bad-request: not a number"
        );
        assert_eq!(
            Outcome::of_call(&failed).line(true, b"x"),
            r#"{"input":"x","error":"bad-request: not a number","module":"sha256:ab"}"#
        );

        let timeout = Err(CallError::Timeout(Duration::from_secs(2)));
        assert_eq!(
            Outcome::of_call(&timeout).line(false, b"1"),
            "compute(1) failed: timeout: no reply within 2 s"
        );
        assert_eq!(
            Outcome::of_call(&timeout).line(true, b"1"),
            r#"{"input":"1","error":"timeout: no reply within 2 s"}"#
        );
    }

    /// A Python node names neither function nor module.
    #[test]
    fn lines_from_a_silent_node_use_generic_names() {
        let reply = Ok(Reply {
            body: b"11".to_vec(),
            origin: Origin::default(),
        });
        assert_eq!(
            Outcome::of_call(&reply).line(false, b"10"),
            "compute(10) = 11"
        );
        assert_eq!(
            Outcome::of_call(&reply).line(true, b"10"),
            r#"{"input":"10","output":"11"}"#
        );
    }
}
