//! The attribute's arguments: `("method.name")` or `("method.name", idempotent)`.

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

/// How the method name is written; repeated in several error messages.
const EXAMPLE: &str = "#[handler(\"service.method\")]";

impl HandlerArgs {
    /// Parses the attribute's arguments, pointing errors at the offending token.
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        Parser::parse2(parse_args, attr)
    }
}

fn parse_args(input: ParseStream<'_>) -> syn::Result<HandlerArgs> {
    if input.is_empty() {
        // With no tokens to point at, the call site is the attribute itself.
        return Err(Error::new(
            Span::call_site(),
            format!("missing method name: write `{EXAMPLE}`"),
        ));
    }
    let method = parse_method(input)?;

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

fn parse_method(input: ParseStream<'_>) -> syn::Result<LitStr> {
    if input.peek(LitStr) {
        let method: LitStr = input.parse()?;
        if method.value().is_empty() {
            return Err(Error::new(method.span(), "the method name must not be empty"));
        }
        return Ok(method);
    }
    if input.peek(Lit) {
        let lit: Lit = input.parse()?;
        return Err(Error::new(
            lit.span(),
            format!("the method name must be a string literal, as in `{EXAMPLE}`"),
        ));
    }
    if input.peek(Ident::peek_any) {
        let ident = input.call(Ident::parse_any)?;
        let message = if ident == "idempotent" {
            "the method name comes first: `#[handler(\"service.method\", idempotent)]`".to_owned()
        } else if input.peek(Token![=]) {
            format!("write the method name alone, without `{ident} =`: `{EXAMPLE}`")
        } else {
            format!(
                "the method name must be a string literal, as in `{EXAMPLE}` \
                 (a constant or a path is not accepted)"
            )
        };
        return Err(Error::new(ident.span(), message));
    }
    Err(input.error(format!(
        "expected the method name as a string literal, as in `{EXAMPLE}`"
    )))
}
