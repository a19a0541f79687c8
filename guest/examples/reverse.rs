//! `reverse`: the request's bytes, last first. A function over raw bytes
//! implements the contract (`guest::Guest`) itself.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::vec::Vec;
use guest::{Failure, Guest};

struct Reverse;

impl Guest for Reverse {
    fn compute(mut request: Vec<u8>) -> Result<Vec<u8>, Failure> {
        request.reverse();
        Ok(request)
    }
}

guest::bindings::export!(Reverse);
