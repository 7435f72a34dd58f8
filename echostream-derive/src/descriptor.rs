//! The types of a typed descriptor (`Method<Req, Resp>`, `Event<T>`,
//! `StreamKind<T>`) read from a checked signature, shared by the function
//! attributes and `#[service]`.
//!
//! Where the signature names the type plainly (`Result<T>`,
//! `StreamReceiver<T>`) it is taken as written; a result alias (a name ending
//! in `Result`) is asked of the compiler through a projection on a runtime
//! trait. Anything else becomes `Unnamed<T>`: the descriptor then compiles
//! (the wrong signature is reported once, by the kind's result or stream
//! trait) but cannot be used for a typed call, rather than be silently wrong.

use crate::kind::Kind;
use crate::signature::CheckedSig;
use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{GenericArgument, PathArguments, Type};

/// The descriptor's full type, such as `Method<(i64, i64), i64>`.
pub(crate) fn descriptor_type(kind: Kind, sig: &CheckedSig<'_>, params_span: Span) -> TokenStream {
    let private = quote!(::echostream::__private);
    match kind {
        Kind::Handler => {
            let req = decoded_type(sig, params_span);
            let resp = ok_type(sig.output);
            quote!(#private::Method<#req, #resp>)
        }
        Kind::Listener => {
            let payload = decoded_type(sig, params_span);
            quote!(#private::Event<#payload>)
        }
        Kind::StreamHandler if is_raw_stream(sig) => quote!(#private::RawStream),
        Kind::StreamHandler => {
            let message = message_type(sig.params.first().copied());
            quote!(#private::StreamKind<#message>)
        }
    }
}

/// Whether the stream parameter is `XStream`: raw byte frames, described by
/// a `RawStream` rather than a typed `StreamKind`.
pub(crate) fn is_raw_stream(sig: &CheckedSig<'_>) -> bool {
    sig.params.first().is_some_and(|param| {
        generic_of(param, &["StreamReceiver", "TimedReceiver", "StreamDuplex"]).is_none()
            && last_ident_ends_with(param, "XStream")
    })
}

/// What reflection reports of the descriptor `desc` (an expression of its
/// concrete type): its `info()` with the JSON Schemas of its types, picked
/// by autoref specialization on `SchemaProbe` (none without the feature
/// `schema` or for a type that does not implement `JsonSchema`).
pub(crate) fn described_info(kind: Kind, desc: &TokenStream) -> TokenStream {
    let private = quote!(::echostream::__private);
    let with_schemas = match kind {
        Kind::Handler => quote! {
            let (req, resp) = #desc.schema_probes();
            info.with_schemas((&&req).json_schema(), (&&resp).json_schema())
        },
        Kind::Listener | Kind::StreamHandler => quote! {
            let probe = #desc.schema_probe();
            info.with_schema((&&probe).json_schema())
        },
    };
    quote! {{
        #[allow(unused_imports)]
        use #private::{NoJsonSchema as _, ViaJsonSchema as _};
        let info = #desc.info();
        #with_schemas
    }}
}

/// The type the parameters after the context are decoded as: `()` for
/// none, the type for one, a tuple for several.
pub(crate) fn decoded_type(sig: &CheckedSig<'_>, params_span: Span) -> TokenStream {
    match sig.params.as_slice() {
        [ty] => quote!(#ty),
        types => {
            // The tuple type gets the span of the parameter list, so an
            // argument type that is not `Deserialize` is reported there
            // (rustc points at the offending type argument).
            let mut tuple = Group::new(Delimiter::Parenthesis, quote!(#(#types,)*));
            tuple.set_span(params_span);
            tuple.into_token_stream()
        }
    }
}

/// `T` of a handler's `Result<T, E>`.
pub(crate) fn ok_type(output: Option<&Type>) -> TokenStream {
    let Some(output) = output else {
        return quote!(());
    };
    match generic_of(output, &["Result"]) {
        Some(Some(ok)) => quote!(#ok),
        _ if last_ident_ends_with(output, "Result") => {
            quote!(<#output as ::echostream::__private::ReplyOk>::Ok)
        }
        _ => quote!(::echostream::__private::Unnamed<#output>),
    }
}

/// What the opener of a stream sends, from the handler's stream parameter.
pub(crate) fn message_type(param: Option<&Type>) -> TokenStream {
    let Some(param) = param else {
        return quote!(());
    };
    match generic_of(param, &["StreamReceiver", "TimedReceiver", "StreamDuplex"]) {
        Some(Some(message)) => quote!(#message),
        // Left out: the default, byte vectors.
        Some(None) => quote!(::std::vec::Vec<u8>),
        None if last_ident_ends_with(param, "XStream") => quote!(::std::vec::Vec<u8>),
        None => quote!(::echostream::__private::Unnamed<#param>),
    }
}

/// If `ty` is a path whose last segment is one of `names`: `Some` of its
/// first type argument (`None` when it has none).
fn generic_of<'a>(ty: &'a Type, names: &[&str]) -> Option<Option<&'a Type>> {
    let Type::Path(path) = ty else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if !names.iter().any(|name| last.ident == name) {
        return None;
    }
    match &last.arguments {
        PathArguments::None => Some(None),
        PathArguments::AngleBracketed(args) => Some(args.args.iter().find_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })),
        PathArguments::Parenthesized(_) => None,
    }
}

/// Whether `ty` is a path whose last segment's name ends with `suffix`.
fn last_ident_ends_with(ty: &Type, suffix: &str) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident.to_string().ends_with(suffix)),
        _ => false,
    }
}
