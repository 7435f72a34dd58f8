//! `#[service("prefix")]` on a trait: the trait with `Send` futures, the
//! typed descriptors, a generic client and a server wrapper that registers
//! one ordinary handler, listener or stream handler per method.
//!
//! Each method is checked like a free function of its kind (`signature`),
//! after its `&self` receiver is taken off; its descriptor type comes from
//! `descriptor`, as for `#[handler]`. [`ServiceGenerator`] emits the items,
//! one method per item.

use crate::descriptor;
use crate::kind::Kind;
use crate::signature::{self, CheckedSig};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use std::collections::HashMap;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Error, FnArg, Ident, ItemTrait, LitStr, Signature, Token, TraitItem, TraitItemFn};

/// The attributes a service method accepts, for error messages.
const METHOD_ATTRIBUTES: &str = "`#[idempotent]`, `#[method(name = \"...\")]`, `#[event]`, `#[stream]`";

/// Attributes passed through to the trait method unchanged.
const PASSED_THROUGH: &[&str] = &["doc", "cfg", "allow", "warn", "deny", "expect", "deprecated"];

/// What `#[service(..)]` takes: the service name, then options.
struct ServiceArgs {
    prefix: LitStr,
    /// `module = "name"`: the descriptor module's name, for when the default
    /// (the trait's name in snake case) clashes with another item.
    module: Option<Ident>,
}

impl Parse for ServiceArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let prefix = input.parse::<LitStr>().map_err(|e| {
            Error::new(
                e.span(),
                "expected the service name, as in `#[service(\"math\")]`",
            )
        })?;
        let mut module = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key = input.parse::<Ident>()?;
            if key != "module" {
                return Err(Error::new(
                    key.span(),
                    "unknown option: the options are `module = \"name\"` (the descriptor module's name)",
                ));
            }
            input.parse::<Token![=]>()?;
            module = Some(input.parse::<LitStr>()?.parse::<Ident>()?);
        }
        Ok(Self { prefix, module })
    }
}

/// Expands `#[service(attr)] item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let result = syn::parse2::<ServiceArgs>(attr)
        .and_then(|ServiceArgs { prefix, module }| {
            let item = syn::parse2::<ItemTrait>(item.clone()).map_err(|_| {
                Error::new(
                    Span::call_site(),
                    "`#[service]` applies to a trait, such as `pub trait Math { async fn add(&self, a: i64) -> Result<i64>; }`",
                )
            })?;
            let methods = parse_methods(&prefix, &item)?;
            let checked = check_methods(&methods)?;
            Ok(ServiceGenerator {
                prefix,
                module,
                item: &item,
                methods: &methods,
                checked,
            }
            .into_token_stream())
        });
    result.unwrap_or_else(|e| {
        let error = e.into_compile_error();
        let item = without_method_attributes(item);
        quote!(#error #item)
    })
}

/// The item emitted next to an error: the trait without the method
/// attributes only this macro knows, so the only diagnostics are its own
/// rather than "cannot find attribute" for each.
fn without_method_attributes(item: TokenStream) -> TokenStream {
    let Ok(mut item) = syn::parse2::<ItemTrait>(item.clone()) else {
        return item;
    };
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs
                .retain(|a| PASSED_THROUGH.iter().any(|known| a.path().is_ident(known)));
        }
    }
    item.into_token_stream()
}

/// One trait method, its attributes read.
struct ServiceMethod<'a> {
    item: &'a TraitItemFn,
    kind: Kind,
    idempotent: bool,
    wire_name: String,
    /// The signature without its `&self`, as a free function of `kind` has.
    free_sig: Signature,
    /// Attributes kept on the trait method.
    kept: Vec<&'a Attribute>,
}

fn parse_methods<'a>(prefix: &LitStr, item: &'a ItemTrait) -> syn::Result<Vec<ServiceMethod<'a>>> {
    let mut errors: Option<Error> = None;
    let mut push = |e: Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let mut methods = Vec::new();
    let mut names: HashMap<String, &Ident> = HashMap::new();
    for trait_item in &item.items {
        let TraitItem::Fn(f) = trait_item else {
            push(Error::new_spanned(
                trait_item,
                "a service trait holds methods only: `async fn name(&self, ...) -> Result<T>;`",
            ));
            continue;
        };
        let mut kind = Kind::Handler;
        let mut idempotent = false;
        let mut wire_name = None;
        let mut kept = Vec::new();
        for attr in &f.attrs {
            let path = attr.path();
            if path.is_ident("idempotent") {
                idempotent = true;
            } else if path.is_ident("event") {
                kind = Kind::Listener;
            } else if path.is_ident("stream") {
                kind = Kind::StreamHandler;
            } else if path.is_ident("method") {
                let parsed = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("name") {
                        wire_name = Some(meta.value()?.parse::<LitStr>()?.value());
                        Ok(())
                    } else {
                        Err(meta.error("unknown key: write `#[method(name = \"service.method\")]`"))
                    }
                });
                if let Err(e) = parsed {
                    push(e);
                }
            } else if PASSED_THROUGH.iter().any(|known| path.is_ident(known)) {
                kept.push(attr);
            } else {
                push(Error::new_spanned(
                    attr,
                    format!("unknown attribute on a service method: the attributes are {METHOD_ATTRIBUTES}"),
                ));
            }
        }
        if idempotent && kind != Kind::Handler {
            push(Error::new_spanned(
                &f.sig.ident,
                "only a request method can be `#[idempotent]`, not an event or a stream",
            ));
        }
        if let Some(body) = &f.default {
            push(Error::new_spanned(
                body,
                "a service method declares no body: implement it in `impl Trait for YourType`",
            ));
        }
        let wire_name = wire_name.unwrap_or_else(|| format!("{}.{}", prefix.value(), f.sig.ident));
        if let Some(first) = names.insert(wire_name.clone(), &f.sig.ident) {
            push(Error::new_spanned(
                &f.sig.ident,
                format!(
                    "`{first}` and `{}` both use the wire name `{wire_name}`",
                    f.sig.ident
                ),
            ));
        }
        let mut free_sig = f.sig.clone();
        match f.sig.inputs.first() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {
                free_sig.inputs = f.sig.inputs.iter().skip(1).cloned().collect::<Punctuated<_, _>>();
            }
            Some(FnArg::Receiver(r)) => push(Error::new_spanned(
                r,
                "a service method takes `&self`: the implementation is shared by every call",
            )),
            _ => push(Error::new(
                f.sig.paren_token.span.join(),
                "a service method takes `&self` first: `async fn name(&self, ctx: Context, ...)`",
            )),
        }
        methods.push(ServiceMethod {
            item: f,
            kind,
            idempotent,
            wire_name,
            free_sig,
            kept,
        });
    }
    errors.map_or(Ok(methods), Err)
}

fn check_methods<'a>(methods: &'a [ServiceMethod<'_>]) -> syn::Result<Vec<CheckedSig<'a>>> {
    let mut errors: Option<Error> = None;
    let mut checked = Vec::new();
    for m in methods {
        match signature::check(m.kind, &m.free_sig, signature::Site::Service) {
            Ok(sig) => checked.push(sig),
            Err(e) => match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            },
        }
    }
    errors.map_or(Ok(checked), Err)
}

struct ServiceGenerator<'a> {
    prefix: LitStr,
    module: Option<Ident>,
    item: &'a ItemTrait,
    methods: &'a [ServiceMethod<'a>],
    checked: Vec<CheckedSig<'a>>,
}

impl ServiceGenerator<'_> {
    fn module(&self) -> Ident {
        self.module
            .clone()
            .unwrap_or_else(|| format_ident!("{}", snake_case(&self.item.ident.to_string())))
    }

    /// Where an argument type that is not serde is reported: at the type
    /// for one argument, at the parameter list for none or several (whose
    /// tuple type carries that span, see `descriptor::decoded_type`).
    fn args_span(m: &ServiceMethod<'_>, sig: &CheckedSig<'_>) -> Span {
        match sig.params.as_slice() {
            [one] => one.span(),
            _ => m.item.sig.paren_token.span.join(),
        }
    }

    fn const_ident(m: &ServiceMethod<'_>) -> Ident {
        format_ident!("{}", m.item.sig.ident.to_string().to_uppercase())
    }

    /// The trait, each `async fn` written as `fn -> impl Future + Send`.
    fn service_trait(&self) -> TokenStream {
        let ItemTrait {
            attrs, vis, ident, ..
        } = self.item;
        let methods = self.methods.iter().map(|m| {
            let kept = &m.kept;
            let mut sig = m.item.sig.clone();
            sig.asyncness = None;
            let output = match &m.item.sig.output {
                syn::ReturnType::Type(_, ty) => quote!(#ty),
                syn::ReturnType::Default => quote!(()),
            };
            sig.output = syn::parse_quote_spanned! {output.span()=>
                -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
            };
            quote! { #(#kept)* #sig; }
        });
        quote! {
            #(#attrs)*
            #vis trait #ident: ::core::marker::Send + ::core::marker::Sync + 'static {
                #(#methods)*
            }
        }
    }

    /// `mod math { pub const ADD: Method<..> = ..; }`.
    fn descriptors(&self) -> TokenStream {
        let vis = &self.item.vis;
        let module = self.module();
        let prefix = &self.prefix;
        let doc = format!(
            "The typed descriptors of the `{}` service's methods, events and streams.",
            self.item.ident
        );
        let consts = self.methods.iter().zip(&self.checked).map(|(m, sig)| {
            let ident = Self::const_ident(m);
            let ty = descriptor::descriptor_type(m.kind, sig, m.item.sig.paren_token.span.join());
            let name = &m.wire_name;
            let idempotent = m.idempotent.then(|| quote!(.idempotent()));
            let doc = format!("`{name}`.");
            quote! {
                #[doc = #doc]
                pub const #ident: #ty = <#ty>::new(#name) #idempotent;
            }
        });
        quote! {
            #[doc = #doc]
            #[allow(unused_imports)]
            #vis mod #module {
                use super::*;
                /// The service's name, as reflection reports it.
                pub const SERVICE: &str = #prefix;
                #(#consts)*
            }
        }
    }

    fn client(&self) -> TokenStream {
        let vis = &self.item.vis;
        let client = format_ident!("{}Client", self.item.ident);
        let module = self.module();
        let private = quote!(::echostream::__private);
        let doc = format!(
            "A typed client of the `{}` service over any [`Caller`]({private}::Caller): an `RpcClient`, a `Peer`.",
            self.item.ident
        )
        .replace(&private.to_string(), "echostream::Caller");
        let methods = self.methods.iter().zip(&self.checked).map(|(m, sig)| {
            let ident = &m.item.sig.ident;
            let docs: Vec<_> = m.kept.iter().filter(|a| a.path().is_ident("doc")).collect();
            let fallback = format!("Calls `{}`.", m.wire_name);
            let fallback = docs.is_empty().then(|| quote!(#[doc = #fallback]));
            let docs = quote!(#(#docs)* #fallback);
            let desc = Self::const_ident(m);
            let names: Vec<Ident> = (0..sig.params.len()).map(|i| format_ident!("a{}", i)).collect();
            let types = &sig.params;
            let args = packed(&names);
            // Spanned at the argument types: a type that is not `Serialize`
            // is reported there, not at the attribute. The callee's path is
            // written out, not interpolated: rustc reports a bound at the
            // path, whose tokens must all carry the span.
            let span = Self::args_span(m, sig);
            match m.kind {
                Kind::Handler => {
                    let ok = descriptor::ok_type(sig.output);
                    let call = quote_spanned! {span=>
                        ::echostream::__private::Caller::call(&self.caller, &#module::#desc, #args).await
                    };
                    quote! {
                        #docs
                        pub async fn #ident(&self, #(#names: #types),*) -> #private::Result<#ok> {
                            #call
                        }
                    }
                }
                Kind::Listener => {
                    let call = quote_spanned! {span=>
                        ::echostream::__private::Caller::emit_event(&self.caller, &#module::#desc, #args).await
                    };
                    quote! {
                        #docs
                        pub async fn #ident(&self, #(#names: #types),*) -> #private::Result<()> {
                            #call
                        }
                    }
                }
                Kind::StreamHandler if descriptor::is_raw_stream(sig) => {
                    quote! {
                        #docs
                        pub async fn #ident(&self) -> #private::Result<#private::StreamSender> {
                            #private::Caller::open_raw(&self.caller, &#module::#desc).await
                        }
                    }
                }
                Kind::StreamHandler => {
                    let message = descriptor::message_type(sig.params.first().copied());
                    let open = quote_spanned! {span=>
                        ::echostream::__private::Caller::open_typed(&self.caller, &#module::#desc).await
                    };
                    quote! {
                        #docs
                        pub async fn #ident(&self) -> #private::Result<#private::TypedSender<#message>> {
                            #open
                        }
                    }
                }
            }
        });
        quote! {
            #[doc = #doc]
            #[derive(::core::clone::Clone, ::core::fmt::Debug)]
            #vis struct #client<C = #private::RpcClient> {
                caller: C,
            }

            impl<C: #private::Caller> #client<C> {
                /// A client calling through `caller`.
                pub fn new(caller: C) -> Self {
                    Self { caller }
                }

                /// The caller it calls through.
                pub fn caller(&self) -> &C {
                    &self.caller
                }

                #(#methods)*
            }
        }
    }

    fn server(&self) -> TokenStream {
        let vis = &self.item.vis;
        let trait_ident = &self.item.ident;
        let server = format_ident!("{}Server", trait_ident);
        let module = self.module();
        let private = quote!(::echostream::__private);
        let doc = format!(
            "Serves an implementation of `{trait_ident}`: `RpcServer::builder().service({server}::new(my_impl))`."
        );
        let registrations = self.methods.iter().zip(&self.checked).map(|(m, sig)| {
            let ident = &m.item.sig.ident;
            let desc = Self::const_ident(m);
            let names: Vec<Ident> = (0..sig.params.len()).map(|i| format_ident!("a{}", i)).collect();
            let ctx_arg = sig.has_context.then(|| quote!(_echostream_ctx,));
            let call = quote! {
                <T as #trait_ident>::#ident(&*svc, #ctx_arg #(#names),*).await
            };
            let info = descriptor::described_info(m.kind, &quote!(#module::#desc));
            let info = quote!(#info.in_service(#module::SERVICE));
            let name = quote!(#module::#desc.name());
            let (pattern, ty) = match m.kind {
                Kind::StreamHandler => {
                    let ty = sig.params[0];
                    (quote!(a0), quote!(#ty))
                }
                _ => (
                    packed(&names),
                    descriptor::decoded_type(sig, m.item.sig.paren_token.span.join()),
                ),
            };
            let closure = quote_spanned! {ident.span()=>
                move |_echostream_ctx: #private::Context, #pattern: #ty| {
                    let svc = ::std::sync::Arc::clone(&svc);
                    async move { #call }
                }
            };
            let idempotent = m.idempotent.then(|| quote!(.mark_idempotent()));
            // Spanned at the argument types: a type that is not
            // `Deserialize` is reported there, not at the attribute.
            let span = Self::args_span(m, sig);
            let register = match m.kind {
                Kind::Handler => {
                    let handler = quote_spanned!(span=> ::echostream::__private::handler_fn(#name, #closure));
                    quote_spanned! {span=>
                        routes.handler(::echostream::__private::Described::new(#handler #idempotent, #info));
                    }
                }
                Kind::Listener => quote_spanned! {span=>
                    routes.listener(::echostream::__private::EventFn::new(#info, #closure));
                },
                Kind::StreamHandler => {
                    let handler =
                        quote_spanned!(span=> ::echostream::__private::stream_handler_fn(#name, #closure));
                    quote_spanned! {span=>
                        routes.stream_handler(::echostream::__private::Described::new(#handler, #info));
                    }
                }
            };
            quote! {{
                let svc = ::std::sync::Arc::clone(&inner);
                #register
            }}
        });
        quote! {
            #[doc = #doc]
            #vis struct #server<T> {
                inner: #private::Arc<T>,
            }

            impl<T> #server<T> {
                /// Serves `inner`, shared by every call.
                pub fn new(inner: T) -> Self {
                    Self { inner: #private::Arc::new(inner) }
                }

                /// Serves an implementation already shared elsewhere.
                pub fn from_arc(inner: #private::Arc<T>) -> Self {
                    Self { inner }
                }
            }

            impl<T> ::core::clone::Clone for #server<T> {
                fn clone(&self) -> Self {
                    Self { inner: ::core::clone::Clone::clone(&self.inner) }
                }
            }

            impl<T> ::core::fmt::Debug for #server<T> {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(::core::stringify!(#server))
                }
            }

            impl<T: #trait_ident> #private::Service for #server<T> {
                fn register(self, routes: &mut #private::Routes<'_>) {
                    let inner = self.inner;
                    #(#registrations)*
                }
            }
        }
    }
}

/// `()` for no names, the name for one, a tuple for several: how arguments
/// travel (as for `#[handler]`).
fn packed(names: &[Ident]) -> TokenStream {
    match names {
        [] => quote!(()),
        [one] => quote!(#one),
        several => quote!((#(#several,)*)),
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl ToTokens for ServiceGenerator<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend([
            self.service_trait(),
            self.descriptors(),
            self.client(),
            self.server(),
        ]);
    }
}
