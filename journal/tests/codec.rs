//! The codec: every payload type round-trips, and the bytes of fixed values never change
//! without a CODEC_VERSION bump.

use pgha_core::{
    Command, CommandId, CommandKind, Config, DataDir, Event, Failure, Input, LocalFacts, Lsn,
    OperatorRequest, PeerId, ProbeResult, Reason, StartAs, State, StopMode, Timestamp, Transition,
};
use pgha_journal::codec::{self, CODEC_VERSION, Header};

fn inputs() -> Vec<Input> {
    vec![
        Input::Timeout,
        Input::Event(Event::Started(LocalFacts {
            data_dir: DataDir::Present {
                timeline: 3,
                lsn: Lsn(0x3000060),
                was_master: true,
            },
            postgres_running: false,
            fenced: true,
        })),
        Input::Event(Event::LocalProbe {
            id: CommandId(7),
            result: ProbeResult::Replica {
                timeline: 2,
                replay_lsn: Lsn(99),
                upstream: Some(PeerId(0)),
            },
        }),
        Input::Event(Event::PeerProbe {
            id: CommandId(8),
            peer: PeerId(0),
            result: ProbeResult::Timeout,
        }),
        Input::Event(Event::CommandDone {
            id: CommandId(9),
            outcome: Err(Failure::Exit(3)),
            duration_ms: 1234,
        }),
        Input::Event(Event::Operator(OperatorRequest::Recover)),
    ]
}

#[test]
fn every_input_round_trips_through_the_codec() {
    for i in inputs() {
        let bytes = codec::encode_input(&i);
        assert_eq!(codec::decode_input(&bytes), Ok(i));
    }
}

#[test]
fn transitions_commands_and_headers_round_trip() {
    let t = Transition {
        at: Timestamp(33_012),
        from: State::Replica {
            upstream: PeerId(0),
        },
        to: State::Promoting {
            upstream: PeerId(0),
        },
        reason: Reason::MasterIsReplica { peer: PeerId(0) },
    };
    assert_eq!(
        codec::decode_transition(&codec::encode_transition(&t)),
        Ok(t)
    );
    let c = Command {
        id: CommandId(40),
        kind: CommandKind::StartPostgres(StartAs::Replica {
            upstream: PeerId(0),
        }),
    };
    assert_eq!(codec::decode_command(&codec::encode_command(&c)), Ok(c));
    let h = Header::new(
        Config::ha_pair("db1", 1, "db0", 0),
        "[replication]\ngrace = 15\n",
    );
    assert_eq!(codec::decode_header(&codec::encode_header(&h)), Ok(h));
}

#[test]
fn golden_bytes_of_fixed_values_never_change_without_a_codec_version_bump() {
    assert_eq!(CODEC_VERSION, 1, "bump the golden bytes with the version");
    let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let ins = inputs();
    let golden = [
        "01",
        // Event::Started, DataDir::Present { timeline 3, lsn as a 4-byte varint, was_master },
        // postgres_running false, fenced true.
        "00000103fc60000003010001",
        "0001070102630100",
        "0002080005",
        "000309010106fbd204",
        "000400",
    ];
    for (i, g) in ins.iter().zip(golden) {
        assert_eq!(hex(codec::encode_input(i)), g, "{i:?}");
    }
    let c = Command {
        id: CommandId(40),
        kind: CommandKind::StopPostgres(StopMode::Fast),
    };
    assert_eq!(hex(codec::encode_command(&c)), "280200");
    let t = Transition {
        at: Timestamp(33_012),
        from: State::Master,
        to: State::Fenced,
        reason: Reason::Operator {
            request: OperatorRequest::Pause,
        },
    };
    assert_eq!(hex(codec::encode_transition(&t)), "fbf480080c1202");
}

#[test]
fn a_damaged_payload_is_an_error_not_a_panic() {
    let bytes = codec::encode_input(&inputs()[1]);
    for cut in 0..bytes.len() {
        assert!(codec::decode_input(&bytes[..cut]).is_err());
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(codec::decode_input(&extra).is_err());
    assert!(codec::decode_header(&[0xff; 64]).is_err());
}

#[test]
fn the_overloaded_probe_outcome_is_appended_so_older_outcomes_keep_their_bytes() {
    // Event::PeerProbe { id 8, peer 0, result }: the result's variant index is the last byte.
    // Every outcome journals wrote before "overloaded" keeps its index; it takes the next one.
    let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let probe = |result| {
        hex(codec::encode_input(&Input::Event(Event::PeerProbe {
            id: CommandId(8),
            peer: PeerId(0),
            result,
        })))
    };
    assert_eq!(probe(ProbeResult::Timeout), "0002080005");
    assert_eq!(probe(ProbeResult::AuthFailed), "0002080006");
    assert_eq!(probe(ProbeResult::OtherError), "0002080007");
    assert_eq!(probe(ProbeResult::Overloaded), "0002080008");
    let i = Input::Event(Event::LocalProbe {
        id: CommandId(3),
        result: ProbeResult::Overloaded,
    });
    assert_eq!(codec::decode_input(&codec::encode_input(&i)), Ok(i));
}
