//! The attribute's arguments: the name first, then the kind's options, as in
//! `#[handler("method.name", idempotent)]` or `#[listener("event.name")]`.

use crate::kind::{Kind, Spec};
use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Error, Ident, Lit, LitStr, Token};

/// What the attribute was asked for.
pub(crate) struct Args {
    /// The method, event or stream name, as written (its span is used for
    /// errors).
    pub(crate) name: LitStr,
    /// Whether `idempotent` was given (only handlers accept it).
    pub(crate) idempotent: bool,
}

impl Args {
    /// Parses the attribute's arguments for `kind`, pointing errors at the
    /// offending token.
    pub(crate) fn parse(kind: Kind, attr: TokenStream) -> syn::Result<Self> {
        Parser::parse2(|input: ParseStream<'_>| parse_args(input, kind.spec()), attr)
    }
}

fn parse_args(input: ParseStream<'_>, spec: &Spec) -> syn::Result<Args> {
    let name = parse_name(input, spec)?;
    let Spec {
        noun,
        name_what: what,
        example,
        options,
        ..
    } = spec;

    let mut idempotent: Option<Ident> = None;
    while !input.is_empty() {
        input.parse::<Token![,]>()?;
        // A trailing comma is fine; anything after it is an option.
        if input.is_empty() {
            break;
        }
        if !input.peek(Ident::peek_any) {
            return Err(match options {
                [] => input.error(format!(
                    "expected nothing after the {what}: a {noun} takes one name, as in `{example}`"
                )),
                _ => input.error(format!(
                    "expected an option after the {what}: {}",
                    quoted_list(options)
                )),
            });
        }
        let option = input.call(Ident::parse_any)?;
        if !options.iter().any(|known| option == known) {
            let message = match options {
                [] => format!(
                    "unknown option `{option}`: a {noun} takes no options, only the {what}, \
                     as in `{example}`"
                ),
                [only] => format!("unknown option `{option}`: the only option is `{only}`"),
                _ => format!(
                    "unknown option `{option}`: the options are {}",
                    quoted_list(options)
                ),
            };
            return Err(Error::new(option.span(), message));
        }
        // `idempotent` is the only option any kind has so far.
        if idempotent.is_some() {
            return Err(Error::new(option.span(), format!("`{option}` is given twice")));
        }
        idempotent = Some(option);
    }

    Ok(Args {
        name,
        idempotent: idempotent.is_some(),
    })
}

/// `` `a`, `b` ``, for messages listing the options.
fn quoted_list(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|option| format!("`{option}`")).collect();
    quoted.join(", ")
}

/// Parses the name that comes first in the attribute.
fn parse_name(input: ParseStream<'_>, spec: &Spec) -> syn::Result<LitStr> {
    let Spec {
        name_what: what,
        example,
        options,
        ..
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
        let message = match options.iter().find(|option| ident == option) {
            Some(option) => {
                let with_option = example.replacen("\")]", &format!("\", {option})]"), 1);
                format!("the {what} comes first: `{with_option}`")
            }
            None if input.peek(Token![=]) => {
                format!("write the {what} alone, without `{ident} =`: `{example}`")
            }
            None => format!(
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
