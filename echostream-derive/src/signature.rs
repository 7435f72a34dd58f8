//! Checking a function's signature against its kind and splitting its
//! parameters into the optional context and the rest.
//!
//! The checks read a [`Signature`] alone, not the function's body, so they
//! apply as well to a method declared in a trait.

use crate::kind::{Input, Kind};
use syn::{Error, FnArg, PatType, ReturnType, Signature, Type, TypeReference};

/// A signature that passed the checks for its kind.
pub(crate) struct CheckedSig<'a> {
    /// Whether the first parameter is the `Context`.
    pub(crate) has_context: bool,
    /// The types of the other parameters, in order: the decoded arguments,
    /// or the one stream parameter.
    pub(crate) params: Vec<&'a Type>,
    /// The declared return type; `None` for `()` left out (never for a
    /// handler, which must declare one).
    pub(crate) output: Option<&'a Type>,
}

/// Where the checked signature is written, which names it in messages.
#[derive(Clone, Copy)]
pub(crate) enum Site {
    /// A free function under a function attribute: "a handler".
    Function,
    /// A `#[service]` trait method, its `&self` taken off: "a service method".
    Service,
}

/// Checks that `sig` can be a function of `kind`, reporting every problem
/// found at the tokens that cause it. A return type that is written is
/// checked by the compiler, against the kind's result trait.
pub(crate) fn check(kind: Kind, sig: &Signature, site: Site) -> syn::Result<CheckedSig<'_>> {
    let spec = kind.spec();
    let noun = match site {
        Site::Function => spec.noun,
        Site::Service => spec.service_noun,
    };
    let mut errors = Errors::default();

    check_qualifiers(sig, noun, spec.not_generic, &mut errors);
    let (has_context, params) = split_params(sig, kind, noun, &mut errors);

    if spec.input == Input::Stream {
        match params.as_slice() {
            [_] => {}
            [] => errors.push(Error::new(
                sig.paren_token.span.join(),
                format!(
                    "a {noun} takes the stream as a parameter: \
                     `(ctx: Context, stream: StreamReceiver<T>)`"
                ),
            )),
            [_, extra @ ..] => {
                for extra in extra {
                    errors.push(Error::new_spanned(
                        extra,
                        format!("a {noun} takes one stream parameter (and optionally a `Context` first)"),
                    ));
                }
            }
        }
    }

    let output = match &sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => None,
    };
    if output.is_none() && spec.output_required {
        errors.push(Error::new(
            sig.paren_token.span.join(),
            format!(
                "a {noun} must return `Result<T, E>`: add a return type \
                 such as `-> echostream::Result<()>`"
            ),
        ));
    }

    errors.finish()?;
    Ok(CheckedSig {
        has_context,
        params,
        output,
    })
}

/// Everything but the parameters and the return type: the function must be a
/// plain, concrete `async fn`.
fn check_qualifiers(sig: &Signature, noun: &str, not_generic: &str, errors: &mut Errors) {
    if let Some(constness) = &sig.constness {
        errors.push(Error::new_spanned(
            constness,
            format!("a {noun} cannot be a `const fn`"),
        ));
    }
    if sig.asyncness.is_none() {
        errors.push(Error::new_spanned(
            sig.fn_token,
            format!("a {noun} must be an `async fn`: write `async fn` here"),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(Error::new_spanned(
            unsafety,
            format!("a {noun} cannot be an `unsafe fn`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(Error::new_spanned(abi, format!("a {noun} cannot declare an ABI")));
    }
    if !sig.generics.params.is_empty() {
        errors.push(Error::new_spanned(
            &sig.generics,
            format!("a {noun} cannot be generic: {not_generic}"),
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(Error::new_spanned(
            where_clause,
            format!("a {noun} cannot have a `where` clause"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(Error::new_spanned(
            variadic,
            format!("a {noun} cannot be variadic"),
        ));
    }
}

/// Returns whether the first parameter is the context, and the types of the
/// other parameters. A parameter reported as wrong is still returned, so a
/// stream handler's one borrowed stream is not also reported as missing.
fn split_params<'a>(
    sig: &'a Signature,
    kind: Kind,
    noun: &str,
    errors: &mut Errors,
) -> (bool, Vec<&'a Type>) {
    let mut has_context = false;
    let mut params = Vec::new();
    // Counts typed parameters only: a `self` receiver is reported on its own,
    // without also reporting the `Context` after it as misplaced.
    let mut typed_before = 0;
    for input in &sig.inputs {
        let ty = match input {
            FnArg::Receiver(receiver) => {
                errors.push(Error::new_spanned(
                    receiver,
                    format!(
                        "a {noun} cannot take `self`: write it as a free `async fn` \
                         outside the `impl` block"
                    ),
                ));
                continue;
            }
            FnArg::Typed(PatType { ty, .. }) => &**ty,
        };
        let first = typed_before == 0;
        typed_before += 1;
        if is_context(ty) {
            if first {
                has_context = true;
            } else {
                errors.push(Error::new_spanned(
                    ty,
                    format!(
                        "the `Context` parameter must come first, before {}",
                        params_noun(kind)
                    ),
                ));
            }
            continue;
        }
        if let Some(reference) = as_reference(ty) {
            let message = if is_context(&reference.elem) {
                "take the context by value, as `ctx: Context` (it is cheap to clone)".to_owned()
            } else {
                match kind.spec().input {
                    Input::Decoded(source) => format!(
                        "a {noun} argument must be an owned type, since it is decoded \
                         from the {source}: use `String` rather than `&str`, \
                         `Vec<T>` rather than `&[T]`"
                    ),
                    Input::Stream => "take the stream by value, as `stream: StreamReceiver<T>`".to_owned(),
                }
            };
            errors.push(Error::new_spanned(ty, message));
        } else if matches!(strip_groups(ty), Type::ImplTrait(_)) {
            let message = match kind.spec().input {
                Input::Decoded(_) => format!(
                    "a {noun} argument cannot be `impl Trait`: name a concrete type \
                     that implements `serde::Deserialize`"
                ),
                Input::Stream => "the stream parameter cannot be `impl Trait`: use \
                                  `StreamReceiver<T>`, `StreamDuplex<T>` or `XStream`"
                    .to_owned(),
            };
            errors.push(Error::new_spanned(ty, message));
        }
        params.push(ty);
    }
    (has_context, params)
}

/// What the parameters after the context are, for "must come first" errors.
fn params_noun(kind: Kind) -> &'static str {
    match kind.spec().input {
        Input::Decoded(_) => "the arguments",
        Input::Stream => "the stream",
    }
}

/// Whether `ty` names the context: a path whose last segment is `Context`.
fn is_context(ty: &Type) -> bool {
    match strip_groups(ty) {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "Context" && last.arguments.is_empty()),
        _ => false,
    }
}

fn as_reference(ty: &Type) -> Option<&TypeReference> {
    match strip_groups(ty) {
        Type::Reference(reference) => Some(reference),
        _ => None,
    }
}

/// Looks through the invisible groups `macro_rules!` wraps captured types in,
/// and through parentheses.
fn strip_groups(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(group) => ty = &group.elem,
            Type::Paren(paren) => ty = &paren.elem,
            _ => return ty,
        }
    }
}

/// Several errors reported together, so one compile shows them all.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
