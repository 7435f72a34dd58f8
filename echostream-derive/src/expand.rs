//! Generating the handler type, its `Handler` impl and its registration.

use crate::args::HandlerArgs;
use crate::signature::{self, HandlerSig};
use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Error, Ident, ItemFn};

/// Expands `#[handler(attr)] item`.
///
/// On an error, the item is emitted unchanged next to the error, so the only
/// diagnostics are the macro's own rather than a cascade of "cannot find
/// `NAME`" where the handler is used.
pub(crate) fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(_) => {
            let error = Error::new(
                Span::call_site(),
                "`#[handler]` applies to an `async fn`, such as \
                 `async fn handle_play(ctx: Context, file: String) -> Result<()>`",
            );
            return with_item(error, item);
        }
    };

    match (HandlerArgs::parse(attr), signature::check(&item_fn)) {
        (Ok(args), Ok(sig)) => generate(&args, &item_fn, &sig),
        (Err(mut error), Err(more)) => {
            error.combine(more);
            with_item(error, item)
        }
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => with_item(error, item),
    }
}

pub(crate) fn with_item(error: Error, item: TokenStream) -> TokenStream {
    let error = error.into_compile_error();
    quote! { #error #item }
}

/// The attributes of the function, sorted by the generated item they go on.
pub(crate) struct SortedAttrs<'a> {
    /// `#[cfg(...)]`: on every generated item, so the handler or listener comes and goes as a whole.
    pub(crate) cfg: Vec<&'a Attribute>,
    /// Doc comments: on the struct, which is what users see and name.
    pub(crate) doc: Vec<&'a Attribute>,
    /// Everything else (`#[allow]`, `#[tracing::instrument]`, ...): on `invoke`,
    /// which holds the body.
    pub(crate) other: Vec<&'a Attribute>,
}

pub(crate) fn sort_attrs(attrs: &[Attribute]) -> SortedAttrs<'_> {
    let mut sorted = SortedAttrs {
        cfg: Vec::new(),
        doc: Vec::new(),
        other: Vec::new(),
    };
    for attr in attrs {
        if attr.path().is_ident("cfg") {
            sorted.cfg.push(attr);
        } else if attr.path().is_ident("doc") {
            sorted.doc.push(attr);
        } else {
            sorted.other.push(attr);
        }
    }
    sorted
}

fn generate(args: &HandlerArgs, item: &ItemFn, sig: &HandlerSig<'_>) -> TokenStream {
    let name = &item.sig.ident;
    let vis = &item.vis;
    let method = &args.method;
    let idempotent = args.idempotent;
    let SortedAttrs { cfg, doc, other } = sort_attrs(&item.attrs);

    let method_doc = format!(
        "The method name this handler answers: `\"{}\"`.",
        method.value().escape_default()
    );

    let mut invoke_sig = item.sig.clone();
    invoke_sig.ident = Ident::new("invoke", name.span());
    let body = &item.block;

    let private = quote!(::echostream::__private);

    // Decode the argument as the type the parameters make up, and bind each
    // parameter to a fresh name: the user's patterns (`mut x`, `_`, tuples)
    // stay in `invoke`'s signature.
    let arg_names: Vec<Ident> = (0..sig.args.len())
        .map(|i| format_ident!("__echostream_arg{}", i))
        .collect();
    let decode = match sig.args.as_slice() {
        [] => quote! {
            let () = #private::decode_args::<()>(&ctx, &args)?;
        },
        [ty] => {
            // Spanned at the argument's type, so "not Deserialize" points there.
            let arg = &arg_names[0];
            quote_spanned! {ty.span()=>
                let #arg = #private::decode_args::<#ty>(&ctx, &args)?;
            }
        }
        types => {
            // The tuple type gets the span of the parameter list, so an
            // argument type that is not `Deserialize` is reported there
            // (rustc points at the offending type argument of `decode_args`).
            let mut tuple = Group::new(Delimiter::Parenthesis, quote!(#(#types,)*));
            tuple.set_span(item.sig.paren_token.span.join());
            quote! {
                let (#(#arg_names,)*) = #private::decode_args::<#tuple>(&ctx, &args)?;
            }
        }
    };
    let ctx_arg = sig
        .has_context
        .then(|| quote!(::core::clone::Clone::clone(&ctx),));

    // Spanned at the return type, so a result that is not `Result<T, E>`
    // (`HandlerResult`'s diagnostic) is reported at the signature.
    let output = sig.output;
    let encode = quote_spanned! {output.span()=>
        ::echostream::__private::encode_reply(&ctx, args.codec, __echostream_reply)
    };
    // Spanned at the function's name, so a body that is not `Send` is
    // reported at the handler rather than at the attribute.
    let run = quote_spanned! {name.span()=>
        ::std::boxed::Box::pin(async move {
            #decode
            let __echostream_reply = #name::invoke(#ctx_arg #(#arg_names),*).await;
            #encode
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
            #[doc = #method_doc]
            #vis const METHOD: &str = #method;

            /// Runs the handler's body directly, without decoding or encoding
            /// (in tests, or from another handler).
            #(#other)*
            #vis #invoke_sig #body
        }

        #(#cfg)*
        impl #private::Handler for #name {
            fn method(&self) -> &str {
                Self::METHOD
            }

            fn idempotent(&self) -> bool {
                #idempotent
            }

            fn call(
                &self,
                ctx: #private::Context,
                args: #private::Payload,
            ) -> #private::BoxFuture<
                'static,
                ::core::result::Result<#private::Payload, #private::Status>,
            > {
                #run
            }
        }

        #(#cfg)*
        #private::inventory::submit! {
            #private::HandlerRegistration {
                make: || -> #private::Arc<dyn #private::Handler> {
                    #private::Arc::new(#name)
                },
                method: #method,
            }
        }
    }
}
