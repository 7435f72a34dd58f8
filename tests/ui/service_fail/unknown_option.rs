use echostream::prelude::*;

#[echostream::service("math", modul = "math_api")]
pub trait Math {
    async fn add(&self, a: i64, b: i64) -> Result<i64>;
}

fn main() {}
