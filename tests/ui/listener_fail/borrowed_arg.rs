use echostream::prelude::*;

#[echostream::listener("user.renamed")]
async fn on_rename(_ctx: &Context, _name: &str) {}

fn main() {}
