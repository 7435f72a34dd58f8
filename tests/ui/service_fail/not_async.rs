use echostream::prelude::*;

#[echostream::service("math")]
pub trait Math {
    fn add(&self, a: i64, b: i64) -> Result<i64>;
}

fn main() {}
