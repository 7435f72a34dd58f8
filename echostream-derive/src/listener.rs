//! Generating the listener type, its `Listener` impl and its registration.
//!
//! The shape follows `expand.rs` (the handler) item for item; what differs is
//! the trait, the name constant (`EVENT`), and the result: a listener returns
//! nothing or `Result<(), E>`, converted with `ListenerResult`, and nothing is
//! encoded since nobody waits for an answer.

use crate::args::ListenerArgs;
use crate::expand::{sort_attrs, with_item, SortedAttrs};
use crate::signature::{self, ListenerSig};
use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Error, Ident, ItemFn};

/// Expands `#[listener(attr)] item`.
///
/// On an error, the item is emitted unchanged next to the error, so the only
/// diagnostics are the macro's own rather than a cascade of "cannot find
/// `NAME`" where the listener is used.
pub(crate) fn listener(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(_) => {
            let error = Error::new(
                Span::call_site(),
                "`#[listener]` applies to an `async fn`, such as \
                 `async fn on_logout(ctx: Context, user_id: u64)`",
            );
            return with_item(error, item);
        }
    };

    match (ListenerArgs::parse(attr), signature::check_listener(&item_fn)) {
        (Ok(args), Ok(sig)) => generate(&args, &item_fn, &sig),
        (Err(mut error), Err(more)) => {
            error.combine(more);
            with_item(error, item)
        }
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => with_item(error, item),
    }
}

fn generate(args: &ListenerArgs, item: &ItemFn, sig: &ListenerSig<'_>) -> TokenStream {
    let name = &item.sig.ident;
    let vis = &item.vis;
    let event = &args.event;
    let SortedAttrs { cfg, doc, other } = sort_attrs(&item.attrs);

    let event_doc = format!(
        "The event name this listener receives: `\"{}\"`.",
        event.value().escape_default()
    );

    let mut invoke_sig = item.sig.clone();
    invoke_sig.ident = Ident::new("invoke", name.span());
    let body = &item.block;

    let private = quote!(::echostream::__private);

    // Decode the payload as the type the parameters make up, and bind each
    // parameter to a fresh name: the user's patterns (`mut x`, `_`, tuples)
    // stay in `invoke`'s signature.
    let arg_names: Vec<Ident> = (0..sig.args.len())
        .map(|i| format_ident!("__echostream_arg{}", i))
        .collect();
    let decode = match sig.args.as_slice() {
        [] => quote! {
            let () = #private::decode_args::<()>(&ctx, &payload)?;
        },
        [ty] => {
            // Spanned at the argument's type, so "not Deserialize" points there.
            let arg = &arg_names[0];
            quote_spanned! {ty.span()=>
                let #arg = #private::decode_args::<#ty>(&ctx, &payload)?;
            }
        }
        types => {
            // The tuple type gets the span of the parameter list, so an
            // argument type that is not `Deserialize` is reported there.
            let mut tuple = Group::new(Delimiter::Parenthesis, quote!(#(#types,)*));
            tuple.set_span(item.sig.paren_token.span.join());
            quote! {
                let (#(#arg_names,)*) = #private::decode_args::<#tuple>(&ctx, &payload)?;
            }
        }
    };
    let ctx_arg = sig
        .has_context
        .then(|| quote!(::core::clone::Clone::clone(&ctx),));

    // Spanned at the return type, so a result that is neither `()` nor
    // `Result<(), E>` (`ListenerResult`'s diagnostic) is reported at the
    // signature. Without a return type the result is `()`, which converts.
    let outcome_span = sig.output.map_or_else(|| name.span(), |output| output.span());
    // The path is written out rather than taken from `private`, whose tokens
    // carry the attribute's span: every token here must point at the signature.
    let outcome = quote_spanned! {outcome_span=>
        ::echostream::__private::ListenerResult::into_outcome(__echostream_outcome)
    };
    // Spanned at the function's name, so a body that is not `Send` is
    // reported at the listener rather than at the attribute.
    let run = quote_spanned! {name.span()=>
        ::std::boxed::Box::pin(async move {
            #decode
            let __echostream_outcome = #name::invoke(#ctx_arg #(#arg_names),*).await;
            #outcome
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
            #[doc = #event_doc]
            #vis const EVENT: &str = #event;

            /// Runs the listener's body directly, without decoding
            /// (in tests, or from a handler).
            #(#other)*
            #vis #invoke_sig #body
        }

        #(#cfg)*
        impl #private::Listener for #name {
            fn event(&self) -> &str {
                Self::EVENT
            }

            fn call(
                &self,
                ctx: #private::Context,
                payload: #private::Payload,
            ) -> #private::BoxFuture<
                'static,
                ::core::result::Result<(), #private::Status>,
            > {
                #run
            }
        }

        #(#cfg)*
        #private::inventory::submit! {
            #private::ListenerRegistration {
                make: || -> #private::Arc<dyn #private::Listener> {
                    #private::Arc::new(#name)
                },
                event: #event,
            }
        }
    }
}
