//! Checking a handler's or listener's signature and splitting its parameters.

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

/// A listener signature that passed the checks.
pub(crate) struct ListenerSig<'a> {
    /// Whether the first parameter is the `Context`.
    pub(crate) has_context: bool,
    /// The types of the parameters decoded from the event, in order.
    pub(crate) args: Vec<&'a Type>,
    /// The declared return type; `None` for `()`, written or not.
    pub(crate) output: Option<&'a Type>,
}

/// What the function becomes, for the wording of the errors.
#[derive(Clone, Copy)]
enum Kind {
    Handler,
    Listener,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Handler => "handler",
            Kind::Listener => "listener",
        }
    }

    /// What the arguments are decoded from.
    fn source(self) -> &'static str {
        match self {
            Kind::Handler => "request",
            Kind::Listener => "event",
        }
    }
}

/// Checks that `item` can be a handler, reporting every problem found at the
/// tokens that cause it.
pub(crate) fn check(item: &ItemFn) -> syn::Result<HandlerSig<'_>> {
    let mut errors = Errors::default();
    let (has_context, args) = check_common(item, Kind::Handler, &mut errors);
    let sig = &item.sig;
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

/// Checks that `item` can be a listener, reporting every problem found at the
/// tokens that cause it. The return type is checked by the compiler, against
/// `ListenerResult`.
pub(crate) fn check_listener(item: &ItemFn) -> syn::Result<ListenerSig<'_>> {
    let mut errors = Errors::default();
    let (has_context, args) = check_common(item, Kind::Listener, &mut errors);
    let output = match &item.sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => None,
    };
    errors.finish()?;
    Ok(ListenerSig {
        has_context,
        args,
        output,
    })
}

/// The checks handlers and listeners share: everything but the return type.
/// Returns whether the first parameter is the context, and the types of the
/// decoded parameters.
fn check_common<'a>(item: &'a ItemFn, kind: Kind, errors: &mut Errors) -> (bool, Vec<&'a Type>) {
    let sig = &item.sig;
    let noun = kind.noun();
    let source = kind.source();

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
        let why = match kind {
            Kind::Handler => {
                "its arguments are decoded from the request \
                 and its result encoded into the reply, so their types must be concrete"
            }
            Kind::Listener => "its arguments are decoded from the event, so their types must be concrete",
        };
        errors.push(Error::new_spanned(
            &sig.generics,
            format!("a {noun} cannot be generic: {why}"),
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

    let mut has_context = false;
    let mut args = Vec::new();
    // Counts typed parameters only: a `self` receiver is reported on its own,
    // without also reporting the `Context` after it as misplaced.
    let mut typed_before = 0;
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.push(Error::new_spanned(
                receiver,
                format!(
                    "a {noun} cannot take `self`: write it as a free `async fn` \
                     outside the `impl` block"
                ),
            )),
            FnArg::Typed(PatType { ty, .. }) => {
                let first = typed_before == 0;
                typed_before += 1;
                if is_context(ty) {
                    if first {
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
                            format!(
                                "a {noun} argument must be an owned type, since it is decoded \
                                 from the {source}: use `String` rather than `&str`, \
                                 `Vec<T>` rather than `&[T]`"
                            ),
                        ));
                    }
                } else if matches!(strip_groups(ty), Type::ImplTrait(_)) {
                    errors.push(Error::new_spanned(
                        ty,
                        format!(
                            "a {noun} argument cannot be `impl Trait`: name a concrete type \
                             that implements `serde::Deserialize`"
                        ),
                    ));
                } else {
                    args.push(&**ty);
                }
            }
        }
    }
    (has_context, args)
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
