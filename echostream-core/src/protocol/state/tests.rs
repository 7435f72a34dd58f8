//! Unit tests of the sans-IO call state, and a byte-level pair harness: two states, a client
//! and a server, each with the bytes it would write; `deliver` decodes one side's bytes and
//! feeds the frames to the other's `classify` (as quinn-proto's `tests/util.rs` pairs two
//! connections), so a call travels exactly as on the wire, without sockets, tasks or clocks.

use super::*;
use crate::protocol::encode::encode_frame;
use bytes::BytesMut;
use echostream_types::{FrameDecoder, Metadata, ResponseFrame, PROTOCOL_VERSION};

/// A test state: waiters and running calls are identified by their request id.
type State = CallState<u64, u64>;

fn server() -> State {
    CallState::new(Role::Server, 4, false, ZeroRtt::NotAttempted)
}

fn request(id: u64, method: &str) -> Frame {
    Frame::Request(RequestFrame {
        id,
        method: method.into(),
        codec: Codec::Bincode,
        deadline: None,
        metadata: Metadata::new(),
        payload: Bytes::from_static(b"args"),
    })
}

fn control() -> Origin {
    Origin::Control { received_at: 7 }
}

/// Classifies on the control stream a frame that did not arrive as early data.
fn classify(state: &State, frame: Frame) -> Step<u64, u64> {
    state.classify(frame, control(), || false)
}

fn assert_violation(step: Step<u64, u64>, needle: &str) {
    match step {
        Step::Violation(code, reason) => {
            assert_eq!(code, CloseCode::PROTOCOL_VIOLATION);
            assert!(reason.contains(needle), "{reason}");
        }
        other => panic!("expected a violation about {needle:?}, got {other:?}"),
    }
}

fn assert_refused(step: Step<u64, u64>, want_id: u64, want: Code) -> Status {
    match step {
        Step::Refuse(id, status) => {
            assert_eq!((id, status.code()), (want_id, want), "{}", status.message());
            status
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn request_in_the_wrong_id_space_is_a_violation() {
    // Odd ids are the server's own: a client never sends one.
    assert_violation(classify(&server(), request(1, "m")), "id space");
    let client: State = CallState::new(Role::Client, 4, false, ZeroRtt::NotAttempted);
    assert_violation(classify(&client, request(2, "m")), "id space");
    assert!(matches!(classify(&client, request(3, "m")), Step::Request(_)));
}

#[test]
fn id_reused_while_in_flight_is_a_violation() {
    let s = server();
    assert!(matches!(classify(&s, request(0, "m")), Step::Request(_)));
    s.register_running(0, "m".into(), || 0);
    assert_violation(classify(&s, request(0, "m")), "reused while in flight");
    // Once the call ended the id may come again.
    s.finish_running(0);
    assert!(matches!(classify(&s, request(0, "m")), Step::Request(_)));
}

#[test]
fn in_flight_cap_refuses_with_resource_exhausted() {
    let s = server();
    for id in [0, 2, 4, 6] {
        assert!(matches!(classify(&s, request(id, "m")), Step::Request(_)));
        s.register_running(id, "m".into(), || id);
    }
    let status = assert_refused(classify(&s, request(8, "busy")), 8, Code::RESOURCE_EXHAUSTED);
    assert!(status.message().contains("limit 4") && status.message().contains("`busy`"));
    assert_eq!(s.running_len(), 4);
}

#[test]
fn response_for_an_unknown_id_does_nothing() {
    let s = server();
    s.insert_pending(1, 1);
    let resp = |id| {
        Frame::Response(ResponseFrame {
            id,
            result: Ok((Codec::Bincode, Bytes::new())),
        })
    };
    assert!(matches!(classify(&s, resp(3)), Step::Nothing));
    assert!(s.awaits_response(1));
    assert!(matches!(classify(&s, resp(1)), Step::Complete(1, Ok(_))));
    // Answered once: a second answer finds nobody.
    assert!(matches!(classify(&s, resp(1)), Step::Nothing));
}

#[test]
fn cancel_for_an_unknown_id_does_nothing() {
    let s = server();
    s.register_running(0, "m".into(), || 100);
    assert!(matches!(classify(&s, Frame::Cancel { id: 2 }), Step::Nothing));
    assert_eq!(s.running_len(), 1);
    assert!(matches!(classify(&s, Frame::Cancel { id: 0 }), Step::Abort(100)));
    assert_eq!(s.running_len(), 0);
}

#[test]
fn hello_or_welcome_after_the_handshake_is_a_violation() {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        max_frame_size: 1 << 20,
        metadata: Metadata::new(),
    };
    assert_violation(
        classify(&server(), Frame::Hello(hello.clone())),
        "after the handshake",
    );
    assert_violation(classify(&server(), Frame::Welcome(hello)), "after the handshake");
}

#[test]
fn awaited_welcome_comes_first() {
    let welcome = Frame::Welcome(Hello {
        version: PROTOCOL_VERSION,
        max_frame_size: 1 << 20,
        metadata: Metadata::new(),
    });
    let client: State = CallState::new(Role::Client, 4, true, ZeroRtt::Pending);
    assert!(matches!(classify(&client, welcome), Step::Welcome(_)));
    assert!(matches!(classify(&client, Frame::Ping(1)), Step::Pong(1)));
    let client: State = CallState::new(Role::Client, 4, true, ZeroRtt::Pending);
    assert_violation(classify(&client, Frame::Ping(1)), "expected a welcome");
}

#[test]
fn request_after_go_away_is_refused_unavailable() {
    let s = server();
    s.set_going_away();
    assert_refused(classify(&s, request(0, "m")), 0, Code::UNAVAILABLE);
    // A request outside the peer's id space is still a violation.
    assert_violation(classify(&s, request(1, "m")), "id space");
}

#[test]
fn non_idempotent_early_data_request_is_refused() {
    let s = server();
    let status = s.refuse_early("pay", false, || true).expect("refused");
    assert_eq!(status.code(), Code::EARLY_DATA_REFUSED);
    assert!(status.message().contains("`pay`"));
    assert!(s.refuse_early("get", true, || true).is_none());
    assert!(s.refuse_early("pay", false, || false).is_none());
    let client: State = CallState::new(Role::Client, 4, false, ZeroRtt::Pending);
    assert!(client.refuse_early("pay", false, || true).is_none());
}

#[test]
fn early_events_are_dropped_by_a_server_and_side_streams_carry_no_events() {
    let event = || {
        Frame::Event(EventFrame {
            name: "e".into(),
            codec: Codec::Bincode,
            metadata: Metadata::new(),
            payload: Bytes::new(),
        })
    };
    let s = server();
    assert!(matches!(s.classify(event(), control(), || true), Step::Nothing));
    assert!(matches!(s.classify(event(), control(), || false), Step::Event(_)));
    assert_violation(
        s.classify(event(), Origin::Side, || false),
        "outside the control stream",
    );
}

#[test]
fn clock_sync_frames_carry_the_receive_time() {
    let s = server();
    assert!(matches!(
        classify(&s, Frame::TimeRequest { t1: 3 }),
        Step::TimeReply { t1: 3, t2: 7 }
    ));
    match classify(&s, Frame::TimeResponse { t1: 1, t2: 3, t3: 4 }) {
        Step::ClockSample(sample) => assert_eq!(sample.local, 7),
        other => panic!("expected a sample, got {other:?}"),
    }
    assert_violation(
        s.classify(Frame::TimeRequest { t1: 3 }, Origin::Side, || false),
        "unexpected",
    );
}

#[test]
fn close_is_recorded_once_and_hands_back_every_call() {
    let s = server();
    s.insert_pending(1, 1);
    s.register_running(0, "m".into(), || 0);
    let closed = || Closed {
        code: None,
        reason: "gone".into(),
        peer_violation: false,
    };
    let (pending, running) = s.record_close(closed()).expect("first close");
    assert_eq!((pending, running), (vec![1], vec![0]));
    assert!(s.record_close(closed()).is_none());
    assert_eq!(s.closed().map(|c| c.reason.as_str()), Some("gone"));
}

// ---------------------------------------------------------------------------------------------
// Pair harness
// ---------------------------------------------------------------------------------------------

/// One end of a pair: its state and the bytes it has written but the other end not yet read.
struct End {
    state: State,
    out: BytesMut,
}

impl End {
    fn new(role: Role) -> Self {
        Self {
            state: CallState::new(role, 16, false, ZeroRtt::NotAttempted),
            out: BytesMut::new(),
        }
    }

    fn write(&mut self, frame: &Frame) {
        let (head, tail) = encode_frame(frame).expect("encodes");
        self.out.extend_from_slice(&head);
        self.out.extend_from_slice(&tail);
    }

    /// Starts a call: a new id in this end's space, a waiter, the request on the wire.
    fn call(&mut self, method: &str, args: &'static [u8]) -> u64 {
        let id = self.state.next_id();
        self.state.insert_pending(id, id);
        self.write(&Frame::Request(RequestFrame {
            id,
            method: method.into(),
            codec: Codec::Json,
            deadline: None,
            metadata: Metadata::new(),
            payload: Bytes::from_static(args),
        }));
        id
    }

    /// Gives up on a call, as the caller's cancel guard does.
    fn cancel(&mut self, id: u64) {
        self.state.remove_pending(id);
        self.write(&Frame::Cancel { id });
    }

    fn respond(&mut self, id: u64, result: Result<(Codec, Bytes), Status>) {
        self.write(&Frame::Response(ResponseFrame { id, result }));
    }

    fn go_away(&mut self) {
        self.state.set_going_away();
        self.write(&Frame::GoAway {
            code: CloseCode::GOING_AWAY,
            reason: "shutting down".into(),
        });
    }
}

/// Decodes everything `from` wrote and classifies it at `to`, in order.
fn deliver(from: &mut End, to: &End) -> Vec<Step<u64, u64>> {
    let decoder = FrameDecoder::new(echostream_types::DEFAULT_MAX_FRAME_SIZE);
    let mut steps = Vec::new();
    while let Some(frame) = decoder.decode(&mut from.out).expect("well-formed bytes") {
        steps.push(to.state.classify(frame, control(), || false));
    }
    assert!(from.out.is_empty(), "a partial frame was left");
    steps
}

#[test]
fn pair_call_and_its_answer() {
    let (mut client, mut server) = (End::new(Role::Client), End::new(Role::Server));
    let id = client.call("echo", b"\"hi\"");
    assert_eq!(id, 0);
    let steps = deliver(&mut client, &server);
    let [Step::Request(req)] = &steps[..] else {
        panic!("expected one request, got {steps:?}")
    };
    assert_eq!(
        (req.id, req.method.as_str(), &req.payload[..]),
        (0, "echo", &b"\"hi\""[..])
    );
    server.respond(req.id, Ok((req.codec, req.payload.clone())));
    let steps = deliver(&mut server, &client);
    match &steps[..] {
        [Step::Complete(waiter, Ok((Codec::Json, bytes)))] => {
            assert_eq!((*waiter, &bytes[..]), (0, &b"\"hi\""[..]))
        }
        other => panic!("expected the answer, got {other:?}"),
    }
    assert_eq!(client.state.pending_len(), 0);
    // The next call takes the next id of the client's space.
    assert_eq!(client.call("echo", b"1"), 2);
}

#[test]
fn pair_cancel_aborts_the_running_call_and_a_late_answer_is_dropped() {
    let (mut client, mut server) = (End::new(Role::Client), End::new(Role::Server));
    let id = client.call("slow", b"null");
    for step in deliver(&mut client, &server) {
        let Step::Request(req) = step else {
            panic!("{step:?}")
        };
        // The handler waits: it runs in a task, registered for cancellation.
        server
            .state
            .register_running(req.id, req.method, || req.id + 1000);
    }
    client.cancel(id);
    let steps = deliver(&mut client, &server);
    assert!(matches!(steps[..], [Step::Abort(1000)]), "{steps:?}");
    assert_eq!(server.state.running_len(), 0);
    // An answer already on its way when the cancel left is ignored by the client.
    server.respond(id, Err(Status::new(Code::CANCELLED, "cancelled")));
    assert!(matches!(deliver(&mut server, &client)[..], [Step::Nothing]));
}

#[test]
fn pair_go_away_refuses_new_calls_and_marks_the_peer() {
    let (mut client, mut server) = (End::new(Role::Client), End::new(Role::Server));
    server.go_away();
    assert!(matches!(deliver(&mut server, &client)[..], [Step::Nothing]));
    assert!(client.state.peer_going_away());
    // A call that crossed the go-away is refused, not run; the refusal travels back.
    let id = client.call("late", b"null");
    let steps = deliver(&mut client, &server);
    let [Step::Refuse(refused, status)] = &steps[..] else {
        panic!("expected a refusal, got {steps:?}")
    };
    assert_eq!((*refused, status.code()), (id, Code::UNAVAILABLE));
    server.respond(*refused, Err(status.clone()));
    match &deliver(&mut server, &client)[..] {
        [Step::Complete(waiter, Err(s))] => assert_eq!((*waiter, s.code()), (id, Code::UNAVAILABLE)),
        other => panic!("expected the refusal, got {other:?}"),
    }
}
