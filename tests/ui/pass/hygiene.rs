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
struct Handler;
struct Payload;
struct Status;
#[allow(dead_code)]
type Result<T> = ::std::result::Result<T, ::echostream::Error>;
mod core {}
mod inventory {}
mod serde {}

/// Parameters named like the generated code's locals.
#[::echostream::handler("shadow.locals")]
async fn locals(ctx: ::echostream::Context, args: ::std::string::String) -> Result<()> {
    let _ = (ctx, args);
    ::std::result::Result::Ok(())
}

#[::echostream::handler("shadow.args")]
async fn reply(
    __echostream_reply: u8,
    __echostream_arg0: u8,
) -> ::std::result::Result<u8, ::echostream::Status> {
    ::std::result::Result::Ok(__echostream_reply + __echostream_arg0)
}

fn main() {
    let _ = (locals, reply);
    let _ = (
        Box, Arc, Clone, Copy, Debug, Default, Pin, Handler, Payload, Status,
    );
}
