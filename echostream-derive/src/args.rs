//! The attribute's arguments: `#[handler("method.name")]` or
//! `#[handler("method.name", idempotent)]`, and `#[listener("event.name")]`.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Error, Ident, Lit, LitStr, Token};

/// What `#[handler(...)]` was asked for.
pub(crate) struct HandlerArgs {
    /// The method name, as written (its span is used for errors).
    pub(crate) method: LitStr,
    /// Whether `idempotent` was given.
    pub(crate) idempotent: bool,
}

/// What `#[listener(...)]` was asked for.
pub(crate) struct ListenerArgs {
    /// The event name, as written (its span is used for errors).
    pub(crate) event: LitStr,
}

/// How an attribute names what it registers; the pieces of its error messages.
struct NameSpec {
    /// `"method name"` or `"event name"`.
    what: &'static str,
    /// How the name is written, repeated in several error messages.
    example: &'static str,
    /// The attribute's only option, which users may put before the name.
    option: Option<&'static str>,
}

const HANDLER: NameSpec = NameSpec {
    what: "method name",
    example: "#[handler(\"service.method\")]",
    option: Some("idempotent"),
};

const LISTENER: NameSpec = NameSpec {
    what: "event name",
    example: "#[listener(\"service.event\")]",
    option: None,
};

impl HandlerArgs {
    /// Parses the attribute's arguments, pointing errors at the offending token.
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        Parser::parse2(parse_handler_args, attr)
    }
}

impl ListenerArgs {
    /// Parses the attribute's arguments, pointing errors at the offending token.
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        Parser::parse2(parse_listener_args, attr)
    }
}

fn parse_handler_args(input: ParseStream<'_>) -> syn::Result<HandlerArgs> {
    let method = parse_name(input, &HANDLER)?;

    let mut idempotent: Option<Ident> = None;
    while !input.is_empty() {
        input.parse::<Token![,]>()?;
        if input.is_empty() {
            break;
        }
        if !input.peek(Ident::peek_any) {
            return Err(input.error("expected an option after the method name: `idempotent`"));
        }
        let option = input.call(Ident::parse_any)?;
        if option == "idempotent" {
            if idempotent.is_some() {
                return Err(Error::new(option.span(), "`idempotent` is given twice"));
            }
            idempotent = Some(option);
        } else {
            return Err(Error::new(
                option.span(),
                format!("unknown option `{option}`: the only option is `idempotent`"),
            ));
        }
    }

    Ok(HandlerArgs {
        method,
        idempotent: idempotent.is_some(),
    })
}

fn parse_listener_args(input: ParseStream<'_>) -> syn::Result<ListenerArgs> {
    let event = parse_name(input, &LISTENER)?;

    if !input.is_empty() {
        input.parse::<Token![,]>()?;
        // A trailing comma is fine; anything after it is an option, and
        // listeners have none yet.
        if !input.is_empty() {
            if input.peek(Ident::peek_any) {
                let option = input.call(Ident::parse_any)?;
                return Err(Error::new(
                    option.span(),
                    format!(
                        "unknown option `{option}`: a listener takes no options, \
                         only the event name, as in `{}`",
                        LISTENER.example
                    ),
                ));
            }
            return Err(input.error(format!(
                "expected nothing after the event name: a listener takes one name, as in `{}`",
                LISTENER.example
            )));
        }
    }

    Ok(ListenerArgs { event })
}

/// Parses the name that comes first in the attribute.
fn parse_name(input: ParseStream<'_>, spec: &NameSpec) -> syn::Result<LitStr> {
    let NameSpec {
        what,
        example,
        option,
    } = spec;
    if input.is_empty() {
        // With no tokens to point at, the call site is the attribute itself.
        return Err(Error::new(
            Span::call_site(),
            format!("missing {what}: write `{example}`"),
        ));
    }
    if input.peek(LitStr) {
        let name: LitStr = input.parse()?;
        if name.value().is_empty() {
            return Err(Error::new(name.span(), format!("the {what} must not be empty")));
        }
        return Ok(name);
    }
    if input.peek(Lit) {
        let lit: Lit = input.parse()?;
        return Err(Error::new(
            lit.span(),
            format!("the {what} must be a string literal, as in `{example}`"),
        ));
    }
    if input.peek(Ident::peek_any) {
        let ident = input.call(Ident::parse_any)?;
        let message = match option {
            Some(option) if ident == option => {
                let with_option = example.replacen("\")]", &format!("\", {option})]"), 1);
                format!("the {what} comes first: `{with_option}`")
            }
            _ if input.peek(Token![=]) => {
                format!("write the {what} alone, without `{ident} =`: `{example}`")
            }
            _ => format!(
                "the {what} must be a string literal, as in `{example}` \
                 (a constant or a path is not accepted)"
            ),
        };
        return Err(Error::new(ident.span(), message));
    }
    Err(input.error(format!(
        "expected the {what} as a string literal, as in `{example}`"
    )))
}
