//! The codec: every payload type round-trips, and the bytes of fixed values never change
//! without a CODEC_VERSION bump.

use pgha_core::{
    Command, CommandId, CommandKind, Config, DataDir, Event, Failure, Input, Isolation, LocalFacts,
    Lsn, Node, OperatorRequest, PeerConfig, PeerId, ProbeResult, Reason, SplitBrainRule, StartAs,
    State, StopMode, Timestamp, Topology, Transition,
};
use pgha_journal::codec::{self, CODEC_VERSION, Header, Snapshot};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A configuration with every field spelled out (not `Config::ha_pair`, whose defaults may
/// change without a codec change): a field added to `Config` fails to compile here first.
fn fixed_config() -> Config {
    Config {
        name: "db1".into(),
        index: 1,
        peers: vec![PeerConfig {
            name: "db0".into(),
            index: 0,
        }],
        topology: Topology::Ha,
        grace_ms: 15_000,
        grace_stagger_ms: 5_000,
        connect_timeout_ms: 5_000,
        psql_error_count: 3,
        probe_interval_ms: 1_000,
        transition_bound_ms: 30_000,
        split_brain: SplitBrainRule::OlderTimelineStepsDown,
        master_give_up_ms: 11_500,
        isolation: Isolation::Fence,
        vip: false,
        proxy: false,
        hooks: false,
    }
}

fn fixed_header() -> Header {
    Header {
        node: "db1".into(),
        config: fixed_config(),
        config_text: "[replication]\ngrace = 15\n".into(),
        pgha_version: "0.1.0".into(),
        codec_version: CODEC_VERSION,
    }
}

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
    assert_eq!(CODEC_VERSION, 2, "bump the golden bytes with the version");
    let hex = |b: Vec<u8>| hex(&b);
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
    let hex = |b: Vec<u8>| hex(&b);
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

// Codec 2's header and snapshot. Before codec 2 only inputs, transitions and commands had
// golden bytes; headers and snapshots were only round-tripped through this build's own
// codec, which passes for any shape, so codec 1 -> 2 (Config and Node gained fields) went
// unnoticed until a journal of the previous pgha failed to open.
const HEADER_V2: &str = "03646231036462310101036462300001fb983afb8813fb881303fbe803fb307501fbec2c00000000195b7265706c69636174696f6e5d0a6772616365203d2031350a05302e312e3002";

/// `Node::new(fixed_config())` (a change of `Node::new`'s initial values also shows here).
const NODE_V2: &str = "036462310101036462300001fb983afb8813fb881303fbe803fb307501fbec2c00000000000001000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn golden_bytes_of_a_run_header_and_a_snapshot_pin_the_config_and_node_shapes() {
    assert_eq!(CODEC_VERSION, 2, "bump the golden bytes with the version");
    let h = fixed_header();
    let bytes = codec::encode_header(&h);
    assert_eq!(hex(&bytes), HEADER_V2);
    assert_eq!(codec::header_codec_version(&bytes), Some(2));
    assert_eq!(codec::decode_header(&bytes), Ok(h.clone()));
    // A fresh node's snapshot: the header, then the node (its config again, then its state).
    let snap = codec::encode(&Snapshot {
        header: h.clone(),
        node: Node::new(fixed_config()),
    });
    assert_eq!(hex(&snap[..bytes.len()]), HEADER_V2);
    let node = hex(&snap[bytes.len()..]);
    assert_eq!(node, NODE_V2, "the fresh node's bytes");
    let back = codec::decode_snapshot(&snap).expect("decodes");
    assert_eq!(back.header, h);
    assert_eq!(back.node.state(), State::Init);
}

// Written by pgha at commit 58cacff (codec 1) for `Config::ha_pair("db1", 1, "db0", 0)` (then
// the fixed config with both-stop, without the give-up and isolation) and the config text
// above: its header, and the node of a snapshot of `Node::new` of that config.
const HEADER_V1: &str = "03646231036462310101036462300001fb983afb8813fb881303fbe803fb307500000000195b7265706c69636174696f6e5d0a6772616365203d2031350a05302e312e3001";
const NODE_V1: &str = "036462310101036462300001fb983afb8813fb881303fbe803fb3075000000000000010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

fn converted_v1_config() -> Config {
    Config {
        split_brain: SplitBrainRule::BothStop,
        // What the old pgha did: the give-up its timings imply, and a cut-off master serving on.
        master_give_up_ms: Config::default_master_give_up_ms(3, 5_000, 1_000),
        isolation: Isolation::KeepServing,
        ..fixed_config()
    }
}

#[test]
fn a_codec_1_header_decodes_into_todays_header_with_the_old_behaviour_filled_in() {
    let bytes = unhex(HEADER_V1);
    assert_eq!(codec::header_codec_version(&bytes), Some(1));
    let h = codec::decode_header(&bytes).expect("a codec 1 header decodes");
    assert_eq!(
        h,
        Header {
            config: converted_v1_config(),
            codec_version: 1,
            ..fixed_header()
        }
    );
    assert_eq!(h.config.master_give_up_ms, 12_000);
    // Today's decoder alone would misread it: the old bytes are not a codec 2 header.
    assert!(codec::decode::<Header>(&bytes).is_err());
}

#[test]
fn a_codec_1_snapshot_decodes_into_todays_node_with_the_new_fields_at_their_defaults() {
    let snap = unhex(&format!("{HEADER_V1}{NODE_V1}"));
    let s = codec::decode_snapshot(&snap).expect("a codec 1 snapshot decodes");
    assert_eq!(s.header.codec_version, 1);
    assert_eq!(s.header.config, converted_v1_config());
    // The converted node is today's fresh node of the converted config, byte for byte: no
    // sign of life or role on the probe slots, no daemon slot used, no forced recovery.
    assert_eq!(
        hex(&codec::encode(&s.node)),
        hex(&codec::encode(&Node::new(converted_v1_config())))
    );
    // Every cut of it is an error, not a panic.
    for cut in 0..snap.len() {
        assert!(codec::decode_snapshot(&snap[..cut]).is_err());
    }
}

#[test]
fn a_header_of_an_unknown_codec_version_is_named_not_misread() {
    let mut bytes = unhex(HEADER_V2);
    *bytes.last_mut().expect("a byte") = 9;
    assert_eq!(codec::header_codec_version(&bytes), Some(9));
    let e = codec::decode_header(&bytes).expect_err("unknown");
    assert!(e.to_string().contains("codec version 9"), "{e}");
    // A codec 2 body that claims codec 1 does not decode as codec 1.
    *bytes.last_mut().expect("a byte") = 1;
    assert!(codec::decode_header(&bytes).is_err());
}
