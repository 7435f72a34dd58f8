//! Signatures the attribute accepts, and what it generates for them.

use echostream::rpc::Listener;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Track {
    #[allow(dead_code)]
    path: String,
}

/// No context and no argument.
#[echostream::listener("tick")]
async fn tick() {}

/// Only the context, through its full path.
#[echostream::listener("whoami")]
async fn whoami(ctx: echostream::Context) {
    let _ = ctx.peer_addr();
}

/// Several arguments with patterns, and a trailing comma in the attribute.
#[echostream::listener("math.add")]
pub async fn add(
    ctx: echostream::Context,
    mut a: i64,
    _: (),
    (b, c): (i64, i64),
    #[allow(unused)] track: Track,
) {
    a += b + c;
    let _ = (ctx, a);
}

/// An explicit unit return type.
#[echostream::listener("unit")]
async fn unit(_level: u8) -> () {}

/// Returns `echostream::Result<()>`.
#[echostream::listener("fallible")]
async fn fallible(n: u32) -> echostream::Result<()> {
    if n == 0 {
        return Err(echostream::Error::with_code(echostream::Code(1), "zero"));
    }
    Ok(())
}

/// Returns an error of its own that converts into a status, through an alias.
#[derive(Debug)]
pub struct Full;

impl From<Full> for echostream::Status {
    fn from(_: Full) -> Self {
        echostream::Status::new(echostream::Code(2), "full")
    }
}

type Outcome = std::result::Result<(), Full>;

#[echostream::listener("queue.push")]
async fn push(_item: String) -> Outcome {
    Err(Full)
}

/// Attributes other than docs stay on the function.
#[echostream::listener("noisy")]
#[allow(unused_variables)]
pub(crate) async fn noisy(unused: Vec<u8>) {}

/// A raw identifier as the name.
#[echostream::listener("r#type")]
async fn r#type() {}

/// A `#[cfg]` removes the listener as a whole.
#[echostream::listener("never")]
#[cfg(any())]
async fn never() {}

mod inner {
    /// Visible outside its module.
    #[echostream::listener("inner.public")]
    pub async fn public(_ctx: echostream::Context) {}
}

fn assert_listener<L: Listener + Copy + Default + std::fmt::Debug>(_: L) {}

fn main() {
    assert_listener(tick);
    assert_listener(whoami);
    assert_listener(add);
    assert_listener(unit);
    assert_listener(fallible);
    assert_listener(push);
    assert_listener(noisy);
    assert_listener(r#type);
    assert_listener(inner::public);
    assert_eq!(add::EVENT, "math.add");
    assert_eq!(inner::public.event(), "inner.public");
    let _ = fallible::invoke(0);
    let _ = push::invoke(String::new());

    // Declared inside a function body too.
    #[echostream::listener("local")]
    async fn local(_n: u8) {}
    assert_listener(local);
}
