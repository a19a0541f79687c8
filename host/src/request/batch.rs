//! A batch request: every input computed in its own fresh instance, in
//! order, and the results framed into one reply (see [`wire::batch`]).

use crate::{
    metrics::RequestMetrics,
    sandbox::ComputeModule,
    wire::{self, ErrorKind, batch},
};
use std::time::Instant;

/// The reply body for the batch request `body`: the results of its
/// inputs in order, or, when it is no batch the node can read or its
/// results would not fit in `max_body`, an error message of `kind`.
pub(super) async fn compute(
    module: &ComputeModule,
    body: &[u8],
    max_body: usize,
    metrics: &RequestMetrics,
) -> Result<Vec<u8>, (ErrorKind, Vec<u8>)> {
    let bad_request =
        |message: String| Err((ErrorKind::BadRequest, wire::error_body(&message, max_body)));
    let inputs = match batch::decode_inputs(body) {
        Ok(inputs) => inputs,
        Err(err) => return bad_request(format!("cannot read the batch: {err}")),
    };
    // Most results are about as long as their inputs.
    let mut results = batch::Results::with_capacity(body.len() + inputs.len());
    for input in inputs {
        let started = Instant::now();
        let outcome = module.compute(input).await;
        metrics.computed(module.name(), &outcome, started.elapsed());
        match outcome {
            Ok(output) => results.ok(&output),
            Err(err) => {
                let message = wire::error_body(&err.to_string(), max_body);
                results.error(err.kind().as_str(), &message);
            }
        }
        if results.len() > max_body {
            return Err((
                ErrorKind::TooLarge,
                wire::error_body(
                    &format!(
                        "the batch's results come to more than the node's --max-body of {max_body} bytes; send fewer inputs in each batch"
                    ),
                    max_body,
                ),
            ));
        }
    }
    Ok(results.into_body())
}
