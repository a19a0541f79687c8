//! The example functions over integers. Overflow is always an error, never
//! a wrapped result.

use crate::{Failure, decimal};

/// `increase(n) = n + 1`: the function of the article this project grew
/// from, and the node's default.
pub fn increase(n: i64) -> Result<i64, Failure> {
    n.checked_add(1).ok_or_else(|| overflow("increase", n))
}

/// `double(n) = 2n`.
pub fn double(n: i64) -> Result<i64, Failure> {
    n.checked_mul(2).ok_or_else(|| overflow("double", n))
}

/// `square(n) = n²`.
pub fn square(n: i64) -> Result<i64, Failure> {
    n.checked_mul(n).ok_or_else(|| overflow("square", n))
}

/// The RabbitMQ tutorial's Fibonacci: `fib(0) = 0`, `fib(1) = 1`,
/// `fib(n) = fib(n-1) + fib(n-2)`, computed in n steps rather than the
/// tutorial's exponential recursion.
pub fn fib(n: i64) -> Result<i64, Failure> {
    if n < 0 {
        let message = ["fib is defined for n >= 0, got ", &decimal(n)];
        return Err(Failure::BadRequest(message.concat()));
    }
    if n == 0 {
        return Ok(0);
    }
    // After step k, `current` is fib(k + 1); overflow stops the loop within
    // 92 steps, however large n is.
    let (mut previous, mut current) = (0_i64, 1_i64);
    for _ in 1..n {
        let next = previous
            .checked_add(current)
            .ok_or_else(|| overflow("fib", n))?;
        (previous, current) = (current, next);
    }
    Ok(current)
}

fn overflow(function: &str, n: i64) -> Failure {
    let message = [function, "(", &decimal(n), ") overflows a 64-bit integer"];
    Failure::ComputeFailed(message.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_adds_one_and_reports_overflow() {
        assert_eq!(increase(10).unwrap(), 11);
        assert_eq!(increase(-1).unwrap(), 0);
        match increase(i64::MAX) {
            Err(Failure::ComputeFailed(message)) => assert!(message.contains("overflows")),
            other => panic!("expected an overflow, got {other:?}"),
        }
    }

    #[test]
    fn double_and_square() {
        assert_eq!(double(21).unwrap(), 42);
        assert_eq!(double(-4).unwrap(), -8);
        assert!(matches!(
            double(i64::MAX / 2 + 1),
            Err(Failure::ComputeFailed(_))
        ));
        assert_eq!(square(-12).unwrap(), 144);
        assert_eq!(square(3_037_000_499).unwrap(), 9_223_372_030_926_249_001);
        assert!(matches!(
            square(3_037_000_500),
            Err(Failure::ComputeFailed(_))
        ));
    }

    #[test]
    fn fib_follows_the_tutorial() {
        let first: alloc::vec::Vec<i64> = (0..10).map(|n| fib(n).unwrap()).collect();
        assert_eq!(first, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
        assert_eq!(fib(92).unwrap(), 7_540_113_804_746_346_429);
        assert!(matches!(fib(93), Err(Failure::ComputeFailed(_))));
        assert!(matches!(fib(-1), Err(Failure::BadRequest(_))));
    }
}
