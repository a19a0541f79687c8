//! A batch request: every input computed in its own fresh instance, in
//! order, and the results framed into one reply (see [`wire::batch`]).

use super::log::RequestLog;
use crate::{
    node::metrics::FunctionMetrics,
    shared::{
        sandbox::ComputeModule,
        trace::{Span, attributes as attr},
        wire::{self, ErrorKind, batch},
    },
};
use std::time::Instant;

/// The reply body for the batch request `body`: the results of its
/// inputs in order, or, when it is no batch the node can read or its
/// results would not fit in `max_body`, an error message of `kind`. The
/// request's `span`, if any, counts the inputs and gets an event for each
/// that failed: a span for each input would cost more than the batch
/// saves. What a guest prints is logged in the request's `log` span.
pub(super) async fn compute(
    module: &ComputeModule,
    body: &[u8],
    max_body: usize,
    metrics: &FunctionMetrics,
    mut span: Option<&mut Span>,
    log: &RequestLog<'_>,
) -> Result<Vec<u8>, (ErrorKind, Vec<u8>)> {
    let bad_request =
        |message: String| Err((ErrorKind::BadRequest, wire::error_body(&message, max_body)));
    let inputs = match batch::decode_inputs(body) {
        Ok(inputs) => inputs,
        Err(err) => return bad_request(format!("cannot read the batch: {err}")),
    };
    if let Some(span) = span.as_deref_mut() {
        span.set(attr::BATCH_COUNT, inputs.len() as i64);
    }
    // Most results are about as long as their inputs.
    let mut results = batch::Results::with_capacity(body.len() + inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let started = Instant::now();
        let outcome = module.compute_in(input, || log.span().clone()).await;
        metrics.computed(module.name(), &outcome, started.elapsed());
        match outcome {
            Ok(output) => results.ok(&output),
            Err(err) => {
                if let Some(span) = span.as_deref_mut() {
                    span.event(
                        "input failed",
                        vec![
                            (attr::INPUT_INDEX, (index as i64).into()),
                            (attr::ERROR_TYPE, err.kind().as_str().into()),
                        ],
                    );
                }
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
