//! Signatures the attribute accepts, and what it generates for them.

use echostream::rpc::Handler;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Track {
    path: String,
}

/// No context and no argument.
#[echostream::handler("ping")]
async fn ping() -> echostream::Result<()> {
    Ok(())
}

/// Only the context, through its full path.
#[echostream::handler("whoami")]
async fn whoami(ctx: echostream::Context) -> echostream::Result<String> {
    Ok(ctx.peer_addr().to_string())
}

/// Several arguments with patterns, an idempotent flag, a trailing comma.
#[echostream::handler("math.add", idempotent)]
pub async fn add(
    mut a: i64,
    _: (),
    (b, c): (i64, i64),
    #[allow(unused)] track: Track,
) -> echostream::Result<i64> {
    a += b + c;
    Ok(a)
}

/// Attributes other than docs stay on the function.
#[echostream::handler("noisy")]
#[allow(unused_variables)]
pub(crate) async fn noisy(unused: u8) -> std::result::Result<Vec<u8>, echostream::Status> {
    Ok(Vec::new())
}

/// A raw identifier as the name.
#[echostream::handler("r#type")]
async fn r#type() -> echostream::Result<()> {
    Ok(())
}

/// Returns a type alias of `Result`, with an error that converts into a status.
type Reply<T> = std::result::Result<T, String>;

#[echostream::handler("alias")]
async fn alias(text: String) -> Reply<String> {
    Ok(text)
}

mod inner {
    /// Visible outside its module.
    #[echostream::handler("inner.public")]
    pub async fn public() -> echostream::Result<()> {
        Ok(())
    }
}

fn assert_handler<H: Handler + Copy + Default + std::fmt::Debug>(_: H) {}

fn main() {
    assert_handler(ping);
    assert_handler(whoami);
    assert_handler(add);
    assert_handler(noisy);
    assert_handler(r#type);
    assert_handler(alias);
    assert_handler(inner::public);
    assert_eq!(add::METHOD, "math.add");
    assert!(add.idempotent());
    assert_eq!(inner::public.method(), "inner.public");
    let _ = add::invoke(1, (), (2, 3), Track { path: String::new() });

    // Declared inside a function body too.
    #[echostream::handler("local")]
    async fn local() -> echostream::Result<u8> {
        Ok(1)
    }
    assert_handler(local);
}
