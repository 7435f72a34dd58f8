//! One file per command family; [`run`] dispatches.

mod bench;
mod browse;
mod call;
mod health;
mod keys;
mod ping;
mod reflect;
mod transfer;

use crate::args::{Cli, Command};
use crate::exit::{Class, Failure};
use clap::CommandFactory;

pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    match cli.command {
        Command::Browse(a) => browse::run(a, json).await,
        Command::List(a) => reflect::list(a, json).await,
        Command::Describe(a) => reflect::describe(a, json).await,
        Command::Call(a) => call::call(a, json).await,
        Command::Emit(a) => call::emit(a, json).await,
        Command::Listen(a) => call::listen(a, json).await,
        Command::Send(a) => transfer::send(a, json).await,
        Command::Receive(a) => transfer::receive(a, json).await,
        Command::Ping(a) => ping::run(a, json).await,
        Command::Health(a) => health::run(a, json).await,
        Command::Bench(a) => bench::run(a, json).await,
        Command::Identity(c) => keys::identity(c, json),
        Command::KnownHosts(c) => keys::known_hosts(c, json),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "echostream", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The JSON argument of `call`, `emit` and `bench`: the text given, `-` for stdin, none for
/// null. A syntax error names the line and column.
pub(crate) fn json_argument(text: Option<&str>, what: &str) -> Result<serde_json::Value, Failure> {
    let (text, source) = match text {
        None => return Ok(serde_json::Value::Null),
        Some("-") => {
            let mut buf = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
                .map_err(|e| Failure::other(format!("cannot read the {what} from stdin: {e}")))?;
            (buf, "stdin")
        }
        Some(text) => (text.to_owned(), "the command line"),
    };
    serde_json::from_str(&text).map_err(|e| {
        let mut failure = Failure::new(
            Class::BadPayload,
            format!("the {what} from {source} is not valid JSON: {e}"),
        );
        if let Some(line) = text.lines().nth(e.line().saturating_sub(1)) {
            let caret = " ".repeat(e.column().saturating_sub(1));
            failure = failure.hint(format!(
                "\n  {line}\n  {caret}^\nstrings need JSON quotes: '\"alice\"'"
            ));
        }
        failure
    })
}

/// Resolves when the user presses Ctrl-C (never, if the signal cannot be watched).
pub(crate) async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = json_argument(Some("[1, 2,"), "argument").unwrap_err();
        assert_eq!(err.class, Class::BadPayload);
        assert!(err.message.contains("line 1 column 6"), "{}", err.message);
        assert_eq!(json_argument(None, "argument").unwrap(), serde_json::Value::Null);
        assert_eq!(
            json_argument(Some("[2,3]"), "argument").unwrap(),
            serde_json::json!([2, 3])
        );
    }
}
