//! `#[stream_handler("name")]`: checking the function and generating the
//! stream handler type, its `StreamHandler` impl and its registration.

use crate::signature::{as_reference, is_context, strip_groups};
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Error, FnArg, Ident, ItemFn, Lit, LitStr, PatType, ReturnType, Type};

const EXAMPLE: &str = "#[stream_handler(\"audio.stream\")]";

/// Expands `#[stream_handler(attr)] item`; on an error the item is kept
/// next to the error so no cascade of unrelated errors follows.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let e = Error::new(
                Span::call_site(),
                "`#[stream_handler]` applies to an `async fn`, such as \
                 `async fn on_audio(ctx: Context, stream: StreamReceiver<Frame>)`",
            );
            return with_item(e, item);
        }
    };
    match (parse_name(attr), check(&item_fn)) {
        (Ok(name), Ok(sig)) => generate(&name, &item_fn, &sig),
        (Err(mut a), Err(b)) => {
            a.combine(b);
            with_item(a, item)
        }
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => with_item(e, item),
    }
}

fn with_item(error: Error, item: TokenStream) -> TokenStream {
    let error = error.into_compile_error();
    quote! { #error #item }
}

fn parse_name(attr: TokenStream) -> syn::Result<LitStr> {
    Parser::parse2(
        |input: ParseStream<'_>| {
            if input.is_empty() {
                return Err(Error::new(
                    Span::call_site(),
                    format!("missing stream name: write `{EXAMPLE}`"),
                ));
            }
            if input.peek(LitStr) {
                let name: LitStr = input.parse()?;
                if name.value().is_empty() {
                    return Err(Error::new(name.span(), "the stream name must not be empty"));
                }
                if !input.is_empty() {
                    return Err(input.error("a stream handler takes no options after its name"));
                }
                return Ok(name);
            }
            if input.peek(Lit) {
                let lit: Lit = input.parse()?;
                return Err(Error::new(
                    lit.span(),
                    format!("the stream name must be a string literal, as in `{EXAMPLE}`"),
                ));
            }
            Err(input.error(format!(
                "expected the stream name as a string literal, as in `{EXAMPLE}`"
            )))
        },
        attr,
    )
}

struct StreamSig<'a> {
    has_context: bool,
    stream: &'a Type,
    output: Option<&'a Type>,
}

fn check(item: &ItemFn) -> syn::Result<StreamSig<'_>> {
    let sig = &item.sig;
    let mut errors: Option<Error> = None;
    let mut push = |e: Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    if sig.asyncness.is_none() {
        push(Error::new_spanned(
            sig.fn_token,
            "a stream handler must be an `async fn`: write `async fn` here",
        ));
    }
    if let Some(c) = &sig.constness {
        push(Error::new_spanned(c, "a stream handler cannot be a `const fn`"));
    }
    if let Some(u) = &sig.unsafety {
        push(Error::new_spanned(u, "a stream handler cannot be an `unsafe fn`"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        push(Error::new_spanned(
            &sig.generics,
            "a stream handler cannot be generic: name the message type, as in `StreamReceiver<Frame>`",
        ));
    }
    let mut has_context = false;
    let mut streams = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => push(Error::new_spanned(
                r,
                "a stream handler cannot take `self`: write it as a free `async fn`",
            )),
            FnArg::Typed(PatType { ty, .. }) => {
                if is_context(ty) {
                    if index == 0 {
                        has_context = true;
                    } else {
                        push(Error::new_spanned(
                            ty,
                            "the `Context` parameter must come first, before the stream",
                        ));
                    }
                } else if as_reference(ty).is_some() {
                    push(Error::new_spanned(
                        ty,
                        "take the stream by value, as `stream: StreamReceiver<T>`",
                    ));
                    streams.push(&**ty);
                } else if matches!(strip_groups(ty), Type::ImplTrait(_)) {
                    push(Error::new_spanned(
                        ty,
                        "the stream parameter cannot be `impl Trait`: use `StreamReceiver<T>`, \
                         `StreamDuplex<T>` or `XStream`",
                    ));
                } else {
                    streams.push(&**ty);
                }
            }
        }
    }
    match streams.len() {
        1 => {}
        0 => push(Error::new(
            sig.paren_token.span.join(),
            "a stream handler takes the stream as a parameter: \
             `(ctx: Context, stream: StreamReceiver<T>)`",
        )),
        _ => {
            for extra in &streams[1..] {
                push(Error::new_spanned(
                    extra,
                    "a stream handler takes one stream parameter (and optionally a `Context` first)",
                ));
            }
        }
    }
    if let Some(e) = errors {
        return Err(e);
    }
    let output = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some(&**ty),
    };
    Ok(StreamSig {
        has_context,
        stream: streams[0],
        output,
    })
}

fn generate(name_lit: &LitStr, item: &ItemFn, sig: &StreamSig<'_>) -> TokenStream {
    let name = &item.sig.ident;
    let vis = &item.vis;
    let private = quote!(::echostream::__private);
    let (cfg, rest): (Vec<_>, Vec<_>) = item.attrs.iter().partition(|a| a.path().is_ident("cfg"));
    let (doc, other): (Vec<_>, Vec<_>) = rest.into_iter().partition(|a| a.path().is_ident("doc"));
    let name_doc = format!(
        "The stream name this handler accepts: `\"{}\"`.",
        name_lit.value().escape_default()
    );
    let mut invoke_sig = item.sig.clone();
    invoke_sig.ident = Ident::new("invoke", name.span());
    let body = &item.block;
    let stream_ty = sig.stream;
    let ctx_arg = sig
        .has_context
        .then(|| quote!(::core::clone::Clone::clone(&ctx),));
    // Spanned at the parameter's type, so "not a stream type" points there.
    let wrap = quote_spanned! {stream_ty.span()=>
        <#stream_ty as #private::FromXStream>::from_xstream(stream)
    };
    let result_span = sig.output.map_or_else(|| item.sig.ident.span(), |o| o.span());
    let finish = quote_spanned! {result_span=>
        #private::StreamHandlerResult::into_status(__echostream_out)
    };
    let run = quote_spanned! {name.span()=>
        ::std::boxed::Box::pin(async move {
            let __echostream_stream = #wrap;
            let __echostream_out = #name::invoke(#ctx_arg __echostream_stream).await;
            #finish
        })
    };
    quote! {
        #(#cfg)*
        #(#doc)*
        #[allow(non_camel_case_types)]
        #[derive(
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::fmt::Debug,
            ::core::default::Default,
        )]
        #vis struct #name;

        #(#cfg)*
        impl #name {
            #[doc = #name_doc]
            #vis const STREAM: &str = #name_lit;

            /// Runs the handler's body directly.
            #(#other)*
            #vis #invoke_sig #body
        }

        #(#cfg)*
        impl #private::StreamHandler for #name {
            fn name(&self) -> &str {
                Self::STREAM
            }

            #[allow(unused_variables)]
            fn call(
                &self,
                ctx: #private::Context,
                stream: #private::XStream,
            ) -> #private::BoxFuture<'static, ::core::result::Result<(), #private::Status>> {
                #run
            }
        }

        #(#cfg)*
        #private::inventory::submit! {
            #private::StreamHandlerRegistration {
                make: || -> #private::Arc<dyn #private::StreamHandler> {
                    #private::Arc::new(#name)
                },
                name: #name_lit,
            }
        }
    }
}
