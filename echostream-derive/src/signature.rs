//! Checking a handler function's signature and splitting its parameters.

use syn::{Error, FnArg, ItemFn, PatType, ReturnType, Type, TypeReference};

/// A handler signature that passed the checks.
pub(crate) struct HandlerSig<'a> {
    /// Whether the first parameter is the `Context`.
    pub(crate) has_context: bool,
    /// The types of the parameters decoded from the request, in order.
    pub(crate) args: Vec<&'a Type>,
    /// The declared return type.
    pub(crate) output: &'a Type,
}

/// Checks that `item` can be a handler, reporting every problem found at the
/// tokens that cause it.
pub(crate) fn check(item: &ItemFn) -> syn::Result<HandlerSig<'_>> {
    let sig = &item.sig;
    let mut errors = Errors::default();

    if let Some(constness) = &sig.constness {
        errors.push(Error::new_spanned(constness, "a handler cannot be a `const fn`"));
    }
    if sig.asyncness.is_none() {
        errors.push(Error::new_spanned(
            sig.fn_token,
            "a handler must be an `async fn`: write `async fn` here",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(Error::new_spanned(unsafety, "a handler cannot be an `unsafe fn`"));
    }
    if let Some(abi) = &sig.abi {
        errors.push(Error::new_spanned(abi, "a handler cannot declare an ABI"));
    }
    if !sig.generics.params.is_empty() {
        errors.push(Error::new_spanned(
            &sig.generics,
            "a handler cannot be generic: its arguments are decoded from the request \
             and its result encoded into the reply, so their types must be concrete",
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(Error::new_spanned(
            where_clause,
            "a handler cannot have a `where` clause",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(Error::new_spanned(variadic, "a handler cannot be variadic"));
    }

    let mut has_context = false;
    let mut args = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(receiver) => errors.push(Error::new_spanned(
                receiver,
                "a handler cannot take `self`: write it as a free `async fn` \
                 outside the `impl` block",
            )),
            FnArg::Typed(PatType { ty, .. }) => {
                if is_context(ty) {
                    if index == 0 {
                        has_context = true;
                    } else {
                        errors.push(Error::new_spanned(
                            ty,
                            "the `Context` parameter must come first, before the arguments",
                        ));
                    }
                } else if let Some(reference) = as_reference(ty) {
                    if is_context(&reference.elem) {
                        errors.push(Error::new_spanned(
                            ty,
                            "take the context by value, as `ctx: Context` (it is cheap to clone)",
                        ));
                    } else {
                        errors.push(Error::new_spanned(
                            ty,
                            "a handler argument must be an owned type, since it is decoded \
                             from the request: use `String` rather than `&str`, \
                             `Vec<T>` rather than `&[T]`",
                        ));
                    }
                } else if matches!(strip_groups(ty), Type::ImplTrait(_)) {
                    errors.push(Error::new_spanned(
                        ty,
                        "a handler argument cannot be `impl Trait`: name a concrete type \
                         that implements `serde::Deserialize`",
                    ));
                } else {
                    args.push(&**ty);
                }
            }
        }
    }

    let output = match &sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => {
            errors.push(Error::new(
                sig.paren_token.span.join(),
                "a handler must return `Result<T, E>`: add a return type \
                 such as `-> echostream::Result<()>`",
            ));
            None
        }
    };

    errors.finish()?;
    Ok(HandlerSig {
        has_context,
        args,
        output: output.expect("a missing return type is reported as an error above"),
    })
}

/// Whether `ty` names the context: a path whose last segment is `Context`.
pub(crate) fn is_context(ty: &Type) -> bool {
    match strip_groups(ty) {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "Context" && last.arguments.is_empty()),
        _ => false,
    }
}

pub(crate) fn as_reference(ty: &Type) -> Option<&TypeReference> {
    match strip_groups(ty) {
        Type::Reference(reference) => Some(reference),
        _ => None,
    }
}

/// Looks through the invisible groups `macro_rules!` wraps captured types in,
/// and through parentheses.
pub(crate) fn strip_groups(mut ty: &Type) -> &Type {
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
