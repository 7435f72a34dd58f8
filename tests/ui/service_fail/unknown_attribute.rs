use echostream::prelude::*;

#[echostream::service("math")]
pub trait Math {
    #[idempotant]
    async fn read(&self, id: u32) -> Result<f32>;
    #[method(nme = "math.get")]
    async fn get(&self, id: u32) -> Result<f32>;
}

fn main() {}
