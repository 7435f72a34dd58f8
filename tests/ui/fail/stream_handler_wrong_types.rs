use echostream::prelude::*;

/// The stream parameter is not a stream type.
#[echostream::stream_handler("numbers")]
async fn not_a_stream(_ctx: Context, _n: u64) {}

/// The result is not `()` or `Result<(), E>`.
#[echostream::stream_handler("strings")]
async fn returns_a_value(_s: StreamReceiver<String>) -> u32 {
    1
}

fn main() {}
