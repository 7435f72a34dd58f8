//! The per-kind parts of the macro family: everything in which `#[handler]`,
//! `#[listener]` and `#[stream_handler]` differ, in one table, so the
//! argument parser, the signature checks and the generator are shared.

/// Which attribute macro is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `#[handler("service.method")]`: answers requests.
    Handler,
    /// `#[listener("service.event")]`: receives one-way events.
    Listener,
    /// `#[stream_handler("name")]`: accepts streams.
    StreamHandler,
}

/// How the function's parameters (after the optional context) are obtained
/// from what the runtime passes to `call`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Decoded together with serde from the payload: none as `()`, one as
    /// its type, several as a tuple. The string says what the payload is
    /// (`"request"`, `"event"`), for error messages.
    Decoded(&'static str),
    /// Exactly one parameter, converted from the stream by `FromXStream`.
    Stream,
}

/// The per-kind words and names; see [`Kind::spec`].
pub(crate) struct Spec {
    /// The macro's attribute, as users write it in messages: `#[handler]`.
    pub(crate) attribute: &'static str,
    /// What the function becomes, in error messages: `"handler"`.
    pub(crate) noun: &'static str,
    /// What a `#[service]` trait method of this kind is, in the same
    /// messages: `"service method"`.
    pub(crate) service_noun: &'static str,
    /// How the attribute's name argument is called: `"method name"`.
    pub(crate) name_what: &'static str,
    /// How the attribute is written, repeated in several error messages.
    pub(crate) example: &'static str,
    /// An example of a function the attribute applies to.
    pub(crate) example_fn: &'static str,
    /// The options the attribute accepts after the name.
    pub(crate) options: &'static [&'static str],
    /// Why the function cannot be generic.
    pub(crate) not_generic: &'static str,
    /// How its parameters are obtained.
    pub(crate) input: Input,
    /// Whether a return type must be written (handlers reply with it).
    pub(crate) output_required: bool,
    /// The associated constant holding the name: `METHOD`.
    pub(crate) name_const: &'static str,
    /// The doc comment of that constant, which goes on with the name.
    pub(crate) name_const_doc: &'static str,
    /// The doc comment of the generated `invoke`, line by line.
    pub(crate) invoke_doc: &'static [&'static str],
    /// The runtime trait implemented, in `__private`: `Handler`.
    pub(crate) runtime_trait: &'static str,
    /// The trait's method returning the name: `method`.
    pub(crate) name_fn: &'static str,
    /// The registration type submitted to `inventory`.
    pub(crate) registration: &'static str,
    /// The registration's field holding the name.
    pub(crate) registration_name: &'static str,
    /// What reflection reports, in `__private`: `MethodInfo`.
    pub(crate) info: &'static str,
}

const HANDLER: Spec = Spec {
    attribute: "#[handler]",
    noun: "handler",
    service_noun: "service method",
    name_what: "method name",
    example: "#[handler(\"service.method\")]",
    example_fn: "async fn handle_play(ctx: Context, file: String) -> Result<()>",
    options: &["idempotent"],
    not_generic: "its arguments are decoded from the request \
                  and its result encoded into the reply, so their types must be concrete",
    input: Input::Decoded("request"),
    output_required: true,
    name_const: "METHOD",
    name_const_doc: "The method name this handler answers",
    invoke_doc: &[
        " Runs the handler's body directly, without decoding or encoding",
        " (in tests, or from another handler).",
    ],
    runtime_trait: "Handler",
    name_fn: "method",
    registration: "HandlerRegistration",
    registration_name: "method",
    info: "MethodInfo",
};

const LISTENER: Spec = Spec {
    attribute: "#[listener]",
    noun: "listener",
    service_noun: "service event method",
    name_what: "event name",
    example: "#[listener(\"service.event\")]",
    example_fn: "async fn on_logout(ctx: Context, user_id: u64)",
    options: &[],
    not_generic: "its arguments are decoded from the event, so their types must be concrete",
    input: Input::Decoded("event"),
    output_required: false,
    name_const: "EVENT",
    name_const_doc: "The event name this listener receives",
    invoke_doc: &[
        " Runs the listener's body directly, without decoding",
        " (in tests, or from a handler).",
    ],
    runtime_trait: "Listener",
    name_fn: "event",
    registration: "ListenerRegistration",
    registration_name: "event",
    info: "EventInfo",
};

const STREAM_HANDLER: Spec = Spec {
    attribute: "#[stream_handler]",
    noun: "stream handler",
    service_noun: "service stream method",
    name_what: "stream name",
    example: "#[stream_handler(\"audio.stream\")]",
    example_fn: "async fn on_audio(ctx: Context, stream: StreamReceiver<Frame>)",
    options: &[],
    not_generic: "name the message type, as in `StreamReceiver<Frame>`",
    input: Input::Stream,
    output_required: false,
    name_const: "STREAM",
    name_const_doc: "The stream name this handler accepts",
    invoke_doc: &[" Runs the handler's body directly."],
    runtime_trait: "StreamHandler",
    name_fn: "name",
    registration: "StreamHandlerRegistration",
    registration_name: "name",
    info: "StreamInfo",
};

impl Kind {
    /// The per-kind words and names.
    pub(crate) fn spec(self) -> &'static Spec {
        match self {
            Kind::Handler => &HANDLER,
            Kind::Listener => &LISTENER,
            Kind::StreamHandler => &STREAM_HANDLER,
        }
    }
}
