//! Typed descriptors of methods, events and streams, and the description a
//! side gives of what it offers (reflection).
//!
//! A descriptor is a name with types attached at compile time only:
//! `const ADD: Method<(i64, i64), i64> = Method::new("math.add");`. On the
//! wire the name alone identifies the call, so a typed client, a plain
//! `request("math.add", ..)`, a command-line tool and other languages all
//! meet on the same names. The types make a mismatched call a compile error
//! in Rust and nothing more.
//!
//! [`ServiceDescription`] is what the reserved method
//! [`DESCRIBE_METHOD`] answers: plain serde types, so a tool that knows no
//! Rust types can list and call what a side offers. With the cargo feature
//! `schema` it also carries a JSON Schema of each type that implements
//! `schemars::JsonSchema` (see [`SchemaProbe`]); other types have none.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;

/// The reserved method answering a [`ServiceDescription`] of the side called.
pub const DESCRIBE_METHOD: &str = "echostream.describe";

/// A request/response method: its wire name, with the argument type `Req`
/// (`()` for none, the type for one, a tuple for several) and the result
/// type `Resp`.
pub struct Method<Req, Resp> {
    name: &'static str,
    idempotent: bool,
    // `fn` pointers: the descriptor holds no value of either type, and stays
    // `Send`, `Sync` and `Copy` whatever they are.
    _types: PhantomData<fn(Req) -> Resp>,
}

/// A one-way event: its wire name and the payload type `T`.
pub struct Event<T> {
    name: &'static str,
    _types: PhantomData<fn(T)>,
}

/// A stream: its wire name and the type `T` of the messages the opener sends.
pub struct StreamKind<T> {
    name: &'static str,
    _types: PhantomData<fn(T)>,
}

/// A stream of raw byte frames (a handler taking `XStream`): its wire name.
/// Not a `StreamKind<Vec<u8>>`, whose typed sender would encode each
/// `Vec<u8>` with the codec, which the raw handler does not decode; open it
/// with `Caller::open_raw` and write bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawStream {
    name: &'static str,
}

impl<Req, Resp> Method<Req, Resp> {
    /// A method of this wire name.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            idempotent: false,
            _types: PhantomData,
        }
    }

    /// Marks the method safe to run more than once for one call: typed calls
    /// to it may then travel as 0-RTT early data.
    pub const fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Whether [`Method::idempotent`] was set.
    pub const fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// What reflection reports of it (without schemas: see
    /// [`Method::schema_probes`]).
    pub fn info(&self) -> MethodInfo {
        MethodInfo {
            name: self.name.to_owned(),
            request: Some(std::any::type_name::<Req>().to_owned()),
            response: Some(std::any::type_name::<Resp>().to_owned()),
            idempotent: self.idempotent,
            service: None,
            request_schema: None,
            response_schema: None,
        }
    }

    /// Probes of the argument and result types, which yield their JSON
    /// Schemas where the types are concrete (generated code).
    pub const fn schema_probes(&self) -> (SchemaProbe<Req>, SchemaProbe<Resp>) {
        (SchemaProbe::new(), SchemaProbe::new())
    }
}

impl<T> Event<T> {
    /// An event of this wire name.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }

    /// What reflection reports of it (without schema).
    pub fn info(&self) -> EventInfo {
        EventInfo {
            name: self.name.to_owned(),
            payload: Some(std::any::type_name::<T>().to_owned()),
            service: None,
            payload_schema: None,
        }
    }

    /// A probe of the payload type (see [`SchemaProbe`]).
    pub const fn schema_probe(&self) -> SchemaProbe<T> {
        SchemaProbe::new()
    }
}

impl<T> StreamKind<T> {
    /// A stream of this wire name.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }

    /// What reflection reports of it (without schema).
    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            name: self.name.to_owned(),
            message: Some(std::any::type_name::<T>().to_owned()),
            ..StreamInfo::unknown_fields()
        }
    }

    /// A probe of the message type (see [`SchemaProbe`]).
    pub const fn schema_probe(&self) -> SchemaProbe<T> {
        SchemaProbe::new()
    }
}

impl RawStream {
    /// A raw stream of this wire name.
    pub const fn new(name: &'static str) -> Self {
        Self { name }
    }

    /// The wire name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// What reflection reports of it: raw, with no message type.
    pub fn info(&self) -> StreamInfo {
        StreamInfo::unknown(self.name).with_raw()
    }

    /// No message type to probe: a probe of a type that has no schema.
    pub const fn schema_probe(&self) -> SchemaProbe<RawStream> {
        SchemaProbe::new()
    }
}

impl fmt::Debug for RawStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawStream({:?})", self.name)
    }
}

impl fmt::Display for RawStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Asks, where a type is concrete, for its JSON Schema: by autoref
/// specialization, `(&&probe).json_schema()` picks [`ViaJsonSchema`] when
/// the cargo feature `schema` is on and the type implements
/// `schemars::JsonSchema`, and [`NoJsonSchema`] (no schema) otherwise. So
/// turning the feature on never breaks a build: a service type without
/// `JsonSchema` is reported without schema. In generic code the fallback is
/// always taken.
pub struct SchemaProbe<T: ?Sized>(PhantomData<fn() -> T>);

impl<T: ?Sized> SchemaProbe<T> {
    /// A probe of `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: ?Sized> Default for SchemaProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: ?Sized> fmt::Debug for SchemaProbe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SchemaProbe<{}>", std::any::type_name::<T>())
    }
}

/// The schema of a type that has one; see [`SchemaProbe`].
pub trait ViaJsonSchema {
    /// The JSON Schema, as JSON text.
    fn json_schema(&self) -> Option<String>;
}

/// No schema; see [`SchemaProbe`].
pub trait NoJsonSchema {
    /// `None`.
    fn json_schema(&self) -> Option<String>;
}

#[cfg(feature = "schema")]
impl<T: schemars::JsonSchema + ?Sized> ViaJsonSchema for &SchemaProbe<T> {
    fn json_schema(&self) -> Option<String> {
        serde_json::to_string(&schemars::schema_for!(T)).ok()
    }
}

impl<T: ?Sized> NoJsonSchema for SchemaProbe<T> {
    fn json_schema(&self) -> Option<String> {
        None
    }
}

/// The name accessors, comparisons and formatting every descriptor shares.
/// Written by hand rather than derived: a derive would require the type
/// parameters to implement the traits too.
macro_rules! descriptor_common {
    ($ty:ident < $($param:ident),+ >) => {
        impl<$($param),+> $ty<$($param),+> {
            /// The wire name.
            pub const fn name(&self) -> &'static str {
                self.name
            }
        }

        impl<$($param),+> Clone for $ty<$($param),+> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<$($param),+> Copy for $ty<$($param),+> {}

        impl<$($param),+> fmt::Debug for $ty<$($param),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.name)
            }
        }

        impl<$($param),+> fmt::Display for $ty<$($param),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name)
            }
        }

        impl<$($param),+> AsRef<str> for $ty<$($param),+> {
            fn as_ref(&self) -> &str {
                self.name
            }
        }

        impl<$($param),+> PartialEq<str> for $ty<$($param),+> {
            fn eq(&self, other: &str) -> bool {
                self.name == other
            }
        }

        impl<$($param),+> PartialEq<&str> for $ty<$($param),+> {
            fn eq(&self, other: &&str) -> bool {
                self.name == *other
            }
        }
    };
}

descriptor_common!(Method<Req, Resp>);
descriptor_common!(Event<T>);
descriptor_common!(StreamKind<T>);

/// What one side offers: its methods, events and streams, as the reserved
/// method [`DESCRIBE_METHOD`] answers. Each list is sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDescription {
    /// The request handlers.
    pub methods: Vec<MethodInfo>,
    /// The event listeners (one entry per listener; several may share a name).
    pub events: Vec<EventInfo>,
    /// The stream handlers.
    pub streams: Vec<StreamInfo>,
}

impl ServiceDescription {
    /// The method of this name, if offered.
    pub fn method(&self, name: &str) -> Option<&MethodInfo> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// The first listener of this event name, if any.
    pub fn event(&self, name: &str) -> Option<&EventInfo> {
        self.events.iter().find(|e| e.name == name)
    }

    /// The stream handler of this name, if any.
    pub fn stream(&self, name: &str) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// One request handler, as reflection reports it. Type names are Rust's
/// `std::any::type_name`: informative, not a stable schema; the schemas
/// (cargo feature `schema`) are JSON Schema 2020-12 documents as JSON text,
/// text so that every codec carries them. Fields added after the first
/// version are `#[serde(default)]`: an older side's JSON answer still
/// decodes (`Caller::describe` asks in JSON for that reason).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodInfo {
    /// The wire name.
    pub name: String,
    /// The argument type, when known.
    pub request: Option<String>,
    /// The result type, when known.
    pub response: Option<String>,
    /// Whether it may run on 0-RTT early data.
    pub idempotent: bool,
    /// The service it belongs to; `None` for a free handler.
    pub service: Option<String>,
    /// The JSON Schema of the argument type, when known.
    #[serde(default)]
    pub request_schema: Option<String>,
    /// The JSON Schema of the result type, when known.
    #[serde(default)]
    pub response_schema: Option<String>,
}

/// One event listener, as reflection reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventInfo {
    /// The wire name.
    pub name: String,
    /// The payload type, when known.
    pub payload: Option<String>,
    /// The service it belongs to; `None` for a free listener.
    pub service: Option<String>,
    /// The JSON Schema of the payload type, when known.
    #[serde(default)]
    pub payload_schema: Option<String>,
}

/// One stream handler, as reflection reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The wire name.
    pub name: String,
    /// The type of the messages the opener sends, when known.
    pub message: Option<String>,
    /// The service it belongs to; `None` for a free stream handler.
    pub service: Option<String>,
    /// The JSON Schema of the message type, when known.
    #[serde(default)]
    pub message_schema: Option<String>,
    /// Whether the stream carries raw byte frames (a handler taking
    /// `XStream`) rather than messages encoded with a codec.
    #[serde(default)]
    pub raw: bool,
}

/// Builders for the `#[non_exhaustive]` infos, which code outside this crate
/// (handlers written by hand, generated code) cannot build literally.
macro_rules! info_common {
    ($ty:ident) => {
        impl $ty {
            /// A name with nothing else known.
            pub fn unknown(name: impl Into<String>) -> Self {
                Self {
                    name: name.into(),
                    ..Self::unknown_fields()
                }
            }

            /// Sets the service it belongs to.
            pub fn in_service(mut self, service: impl Into<String>) -> Self {
                self.service = Some(service.into());
                self
            }
        }
    };
}

info_common!(MethodInfo);
info_common!(EventInfo);
info_common!(StreamInfo);

impl MethodInfo {
    fn unknown_fields() -> Self {
        Self {
            name: String::new(),
            request: None,
            response: None,
            idempotent: false,
            service: None,
            request_schema: None,
            response_schema: None,
        }
    }

    /// Sets the argument and result schemas (JSON text).
    pub fn with_schemas(mut self, request: Option<String>, response: Option<String>) -> Self {
        self.request_schema = request;
        self.response_schema = response;
        self
    }

    /// Sets the argument and result type names from the types.
    pub fn with_types<Req, Resp>(mut self) -> Self {
        self.request = Some(std::any::type_name::<Req>().to_owned());
        self.response = Some(std::any::type_name::<Resp>().to_owned());
        self
    }

    /// Sets whether it is idempotent.
    pub fn with_idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

impl EventInfo {
    fn unknown_fields() -> Self {
        Self {
            name: String::new(),
            payload: None,
            service: None,
            payload_schema: None,
        }
    }

    /// Sets the payload schema (JSON text).
    pub fn with_schema(mut self, schema: Option<String>) -> Self {
        self.payload_schema = schema;
        self
    }

    /// Sets the payload type name from the type.
    pub fn with_type<T>(mut self) -> Self {
        self.payload = Some(std::any::type_name::<T>().to_owned());
        self
    }
}

impl StreamInfo {
    fn unknown_fields() -> Self {
        Self {
            name: String::new(),
            message: None,
            service: None,
            message_schema: None,
            raw: false,
        }
    }

    /// Sets the message type name from the type.
    pub fn with_type<T: ?Sized>(mut self) -> Self {
        self.message = Some(std::any::type_name::<T>().to_owned());
        self
    }

    /// Sets the message schema (JSON text).
    pub fn with_schema(mut self, schema: Option<String>) -> Self {
        self.message_schema = schema;
        self
    }

    /// Marks it a stream of raw byte frames.
    pub fn with_raw(mut self) -> Self {
        self.raw = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD: Method<(i64, i64), i64> = Method::new("math.add").idempotent();

    #[test]
    fn descriptor_compares_with_its_name_and_reports_its_types() {
        assert_eq!(ADD, "math.add");
        assert_eq!(ADD.name(), "math.add");
        assert!(ADD.is_idempotent());
        let info = ADD.info();
        assert_eq!(info.request.as_deref(), Some("(i64, i64)"));
        assert_eq!(info.response.as_deref(), Some("i64"));
        assert_eq!(format!("{ADD:?}"), "Method(\"math.add\")");
        let e: Event<String> = Event::new("user.left");
        assert_eq!(e.info().payload.as_deref(), Some("alloc::string::String"));
    }

    #[test]
    // The two borrows are the autoref specialization, not needless.
    #[allow(clippy::needless_borrow)]
    fn a_schema_probe_falls_back_to_no_schema() {
        struct NoSchema;
        assert_eq!((&&SchemaProbe::<NoSchema>::new()).json_schema(), None);
        let int = (&&ADD.schema_probes().1).json_schema();
        #[cfg(feature = "schema")]
        assert!(int.expect("i64 has a schema").contains("\"int64\""));
        #[cfg(not(feature = "schema"))]
        assert_eq!(int, None);
    }
}
