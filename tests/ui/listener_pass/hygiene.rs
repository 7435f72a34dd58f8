//! The generated code keeps working when the user's scope shadows the names
//! it could collide with.
#![no_implicit_prelude]

extern crate std;

struct Box;
struct Arc;
struct Clone;
struct Copy;
struct Debug;
struct Default;
struct Pin;
struct Listener;
struct ListenerResult;
struct Payload;
struct Status;
struct Ok;
#[allow(dead_code)]
type Result<T> = ::std::result::Result<T, ::echostream::Error>;
mod core {}
mod inventory {}
mod serde {}

/// Parameters named like the generated code's locals.
#[::echostream::listener("shadow.locals")]
async fn locals(ctx: ::echostream::Context, payload: ::std::string::String) -> Result<()> {
    let _ = (ctx, payload);
    ::std::result::Result::Ok(())
}

#[::echostream::listener("shadow.args")]
async fn outcome(__echostream_outcome: u8, __echostream_arg0: u8) {
    let _ = __echostream_outcome + __echostream_arg0;
}

fn main() {
    let _ = (locals, outcome);
    let _ = (
        Box,
        Arc,
        Clone,
        Copy,
        Debug,
        Default,
        Pin,
        Listener,
        ListenerResult,
        Payload,
        Status,
        Ok,
    );
}
