use echostream::prelude::*;

pub struct Point {
    pub x: i64,
}

#[echostream::service("geo")]
pub trait Geo {
    async fn norm(&self, p: Point) -> Result<i64>;
}

fn main() {}
