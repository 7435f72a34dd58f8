//! The one generator behind `#[handler]`, `#[listener]` and
//! `#[stream_handler]`.
//!
//! [`expand`] parses the attribute and checks the signature, then
//! [`FnGenerator`] emits the items, one method per item: the unit struct,
//! its inherent impl (the name constant and `invoke`), the runtime trait's
//! impl and the `inventory` registration. The kinds differ only in
//! [`Spec`] and in how `call` obtains the parameters and
//! converts the result ([`FnGenerator::bind_params`], [`FnGenerator::finish`]).
//!
//! A new item is a new method called from [`ToTokens::to_tokens`] (or from
//! `inherent_impl`, for an associated item such as a typed descriptor built
//! from [`FnGenerator::decoded_type`] and the return type). A macro over a
//! trait would check each method with [`signature::check`], which reads a
//! `Signature` alone, and reuse the methods that need no body.

use crate::args::Args;
use crate::descriptor;
use crate::kind::{Input, Kind, Spec};
use crate::signature::{self, CheckedSig};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, Error, Ident, ItemFn};

/// Expands `#[kind(attr)] item`.
///
/// On an error, the item is emitted unchanged next to the error, so the only
/// diagnostics are the macro's own rather than a cascade of "cannot find
/// `NAME`" where the function is used.
pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let spec = kind.spec();
    let Ok(item_fn) = syn::parse2::<ItemFn>(item.clone()) else {
        let error = Error::new(
            Span::call_site(),
            format!(
                "`{}` applies to an `async fn`, such as `{}`",
                spec.attribute, spec.example_fn
            ),
        );
        return with_item(error, item);
    };

    match (
        Args::parse(kind, attr),
        signature::check(kind, &item_fn.sig, signature::Site::Function),
    ) {
        (Ok(args), Ok(sig)) => FnGenerator::new(kind, &args, &item_fn, &sig).into_token_stream(),
        (Err(mut error), Err(more)) => {
            error.combine(more);
            with_item(error, item)
        }
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => with_item(error, item),
    }
}

fn with_item(error: Error, item: TokenStream) -> TokenStream {
    let error = error.into_compile_error();
    quote! { #error #item }
}

/// Generates the items for one checked function.
pub(crate) struct FnGenerator<'a> {
    kind: Kind,
    /// `kind`'s words and names.
    spec: &'static Spec,
    args: &'a Args,
    item: &'a ItemFn,
    sig: &'a CheckedSig<'a>,
    /// `#[cfg(...)]`: on every generated item, so the function's items come
    /// and go as a whole.
    cfg: Vec<&'a Attribute>,
    /// Doc comments: on the struct, which is what users see and name.
    doc: Vec<&'a Attribute>,
    /// Everything else (`#[allow]`, `#[tracing::instrument]`, ...): on
    /// `invoke`, which holds the body.
    other: Vec<&'a Attribute>,
    /// The runtime, reached only through the hidden re-export module. Its
    /// tokens carry the attribute's span; paths that must point at the
    /// user's signature are written out in `quote_spanned!` instead.
    private: TokenStream,
    /// The fresh names the parameters after the context are bound to in
    /// `call`: the user's patterns (`mut x`, `_`, tuples) stay in `invoke`.
    param_names: Vec<Ident>,
}

impl<'a> FnGenerator<'a> {
    fn new(kind: Kind, args: &'a Args, item: &'a ItemFn, sig: &'a CheckedSig<'a>) -> Self {
        let mut cfg = Vec::new();
        let mut doc = Vec::new();
        let mut other = Vec::new();
        for attr in &item.attrs {
            if attr.path().is_ident("cfg") {
                cfg.push(attr);
            } else if attr.path().is_ident("doc") {
                doc.push(attr);
            } else {
                other.push(attr);
            }
        }
        Self {
            kind,
            spec: kind.spec(),
            args,
            item,
            sig,
            cfg,
            doc,
            other,
            private: quote!(::echostream::__private),
            param_names: (0..sig.params.len())
                .map(|i| format_ident!("__echostream_arg{}", i))
                .collect(),
        }
    }

    fn name(&self) -> &Ident {
        &self.item.sig.ident
    }

    /// The unit struct named like the function, so it can be passed as a
    /// value (`.handler(NAME)`).
    fn unit_struct(&self) -> TokenStream {
        let Self { cfg, doc, .. } = self;
        let vis = &self.item.vis;
        let name = self.name();
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
        }
    }

    /// `impl NAME { const METHOD; fn invoke }`.
    fn inherent_impl(&self) -> TokenStream {
        let cfg = &self.cfg;
        let name = self.name();
        let name_const = self.name_const();
        let invoke = self.invoke_fn();
        quote! {
            #(#cfg)*
            impl #name {
                #name_const
                #invoke
            }
        }
    }

    /// The associated constant holding the name (`METHOD`, `EVENT`,
    /// `STREAM`).
    fn name_const(&self) -> TokenStream {
        let vis = &self.item.vis;
        let lit = &self.args.name;
        let ident = runtime_ident(self.spec.name_const);
        let doc = format!(
            "{}: `\"{}\"`, with its types (a typed descriptor).",
            self.spec.name_const_doc,
            lit.value().escape_default()
        );
        let ty = descriptor::descriptor_type(self.kind, self.sig, self.item.sig.paren_token.span.join());
        let idempotent = self.args.idempotent.then(|| quote!(.idempotent()));
        quote! {
            #[doc = #doc]
            #vis const #ident: #ty = <#ty>::new(#lit) #idempotent;
        }
    }

    /// The original function renamed `invoke`, callable directly (in tests,
    /// say).
    fn invoke_fn(&self) -> TokenStream {
        let vis = &self.item.vis;
        let other = &self.other;
        let doc = self.spec.invoke_doc;
        let mut sig = self.item.sig.clone();
        sig.ident = Ident::new("invoke", self.name().span());
        let body = &self.item.block;
        quote! {
            #(#[doc = #doc])*
            #(#other)*
            #vis #sig #body
        }
    }

    /// The runtime trait's impl, whose `call` obtains the parameters, runs
    /// `invoke` and converts its result.
    fn trait_impl(&self) -> TokenStream {
        let Self { cfg, private, .. } = self;
        let name = self.name();
        let runtime_trait = runtime_ident(self.spec.runtime_trait);
        let name_fn = runtime_ident(self.spec.name_fn);
        let name_const = runtime_ident(self.spec.name_const);
        let idempotent = self.idempotent_fn();
        let info = runtime_ident(self.spec.info);
        let (input, reply) = match self.kind {
            Kind::Handler => (quote!(#private::Payload), quote!(#private::Payload)),
            Kind::Listener => (quote!(#private::Payload), quote!(())),
            Kind::StreamHandler => (quote!(#private::XStream), quote!(())),
        };
        let run = self.run();
        let described = descriptor::described_info(self.kind, &quote!(Self::#name_const));
        quote! {
            #(#cfg)*
            impl #private::#runtime_trait for #name {
                fn #name_fn(&self) -> &str {
                    Self::#name_const.name()
                }

                #idempotent

                fn describe(&self) -> #private::#info {
                    #described
                }

                // `ctx` is unused when the function does not take it and
                // nothing is decoded.
                #[allow(unused_variables)]
                fn call(
                    &self,
                    ctx: #private::Context,
                    input: #input,
                ) -> #private::BoxFuture<
                    'static,
                    ::core::result::Result<#reply, #private::Status>,
                > {
                    #run
                }
            }
        }
    }

    /// `Handler::idempotent`, for the kind that has the option.
    fn idempotent_fn(&self) -> Option<TokenStream> {
        let idempotent = self.args.idempotent;
        self.spec.options.contains(&"idempotent").then(|| {
            quote! {
                fn idempotent(&self) -> bool {
                    #idempotent
                }
            }
        })
    }

    /// The registration `register_all()` finds.
    fn registration(&self) -> TokenStream {
        let Self { cfg, private, .. } = self;
        let name = self.name();
        let lit = &self.args.name;
        let runtime_trait = runtime_ident(self.spec.runtime_trait);
        let registration = runtime_ident(self.spec.registration);
        let field = runtime_ident(self.spec.registration_name);
        quote! {
            #(#cfg)*
            #private::inventory::submit! {
                #private::#registration {
                    make: || -> #private::Arc<dyn #private::#runtime_trait> {
                        #private::Arc::new(#name)
                    },
                    #field: #lit,
                }
            }
        }
    }

    /// The body of `call`.
    fn run(&self) -> TokenStream {
        let name = self.name();
        let bind = self.bind_params();
        let finish = self.finish();
        let ctx_arg = self
            .sig
            .has_context
            .then(|| quote!(::core::clone::Clone::clone(&ctx),));
        let params = &self.param_names;
        // Spanned at the function's name, so a body that is not `Send` is
        // reported at the function rather than at the attribute.
        quote_spanned! {name.span()=>
            ::std::boxed::Box::pin(async move {
                #bind
                let __echostream_out = #name::invoke(#ctx_arg #(#params),*).await;
                #finish
            })
        }
    }

    /// Binds `param_names` from `call`'s `input`.
    fn bind_params(&self) -> TokenStream {
        let Self {
            private, param_names, ..
        } = self;
        match (self.spec.input, self.sig.params.as_slice()) {
            (Input::Decoded(_), params) => {
                let ty = self.decoded_type();
                let (pattern, span) = match (param_names.as_slice(), params) {
                    // Spanned at the argument's type, so "not Deserialize"
                    // points there.
                    ([param], [ty]) => (quote!(#param), ty.span()),
                    _ => (quote!((#(#param_names,)*)), Span::call_site()),
                };
                quote_spanned! {span=>
                    let #pattern = #private::decode_args::<#ty>(&ctx, &input)?;
                }
            }
            (Input::Stream, params) => {
                // The signature check ensures exactly one stream parameter.
                let ty = params[0];
                let param = &param_names[0];
                // Spanned at the parameter's type, so "not a stream type"
                // points there.
                quote_spanned! {ty.span()=>
                    let #param = <#ty as #private::FromXStream>::from_xstream(input);
                }
            }
        }
    }

    /// The type the parameters after the context are decoded as.
    fn decoded_type(&self) -> TokenStream {
        descriptor::decoded_type(self.sig, self.item.sig.paren_token.span.join())
    }

    /// Converts `invoke`'s result into what `call` returns. Spanned at the
    /// return type (at the name when there is none), so a wrong result type
    /// (the result trait's diagnostic) is reported at the signature.
    fn finish(&self) -> TokenStream {
        let span = self
            .sig
            .output
            .map_or_else(|| self.name().span(), |output| output.span());
        // The paths are written out rather than taken from `private`, whose
        // tokens carry the attribute's span: every token here must point at
        // the signature.
        match self.kind {
            Kind::Handler => quote_spanned! {span=>
                ::echostream::__private::encode_reply(&ctx, input.codec, __echostream_out)
            },
            Kind::Listener => quote_spanned! {span=>
                ::echostream::__private::ListenerResult::into_outcome(__echostream_out)
            },
            Kind::StreamHandler => quote_spanned! {span=>
                ::echostream::__private::StreamHandlerResult::into_status(__echostream_out)
            },
        }
    }
}

/// An identifier of the runtime or of the generated API, spanned like the
/// rest of the generated code.
fn runtime_ident(name: &str) -> Ident {
    Ident::new(name, Span::call_site())
}

impl ToTokens for FnGenerator<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend([
            self.unit_struct(),
            self.inherent_impl(),
            self.trait_impl(),
            self.registration(),
        ]);
    }
}
