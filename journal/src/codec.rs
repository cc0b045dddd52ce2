//! The one place payloads are encoded: serde + bincode 2 (`=2.0.1`) with a fixed
//! configuration. Every payload type is a core type (externally tagged enums only) or one of
//! the small records below. Changing any encoded type's shape changes the bytes: bump
//! [`CODEC_VERSION`] and keep a decoder for the old version; the golden-bytes tests in
//! `tests/codec.rs` fail first. (Appending an enum variant keeps every older value's bytes:
//! no bump.)
//!
//! Older versions decoded here:
//! * 1 (pgha 0.1.0 before the master give-up and the peer daemon reports): `Config` lacked
//!   `master_give_up_ms` and `isolation`, `Node` its daemon slots, `force` and the slots'
//!   `alive_at` and `role`. Headers and snapshots decode through [`v1`] into today's types;
//!   inputs, transitions and commands decode as today's.
//!
//! A run's payloads are all of the version its header names ([`header_codec_version`]).

use pgha_core::{Command, Config, Input, Node, Transition};
use serde::{Deserialize, Serialize};

mod v1;

/// The version of the payload encoding written by this build. A journal whose header names
/// a larger version is refused with [`crate::JournalError::NewerCodec`].
///
/// * 2: `Config` gained `master_give_up_ms` and `isolation`; `Node` its peer daemon slots,
///   `force`, and `alive_at` and `role` on every probe slot.
pub const CODEC_VERSION: u32 = 2;

/// The oldest version this build decodes.
pub const OLDEST_CODEC_VERSION: u32 = 1;

/// What the core of [`CODEC_VERSION`] adds to the core of codec `version` (why a run of
/// that codec does not replay exactly).
pub fn changes_since(version: u32) -> &'static str {
    match version {
        1 => {
            "peer daemon probes, the master give-up on a silent local postgres, the isolation \
             fence and elections by data position"
        }
        _ => "other decisions",
    }
}

/// The largest payload decoded (a guard against a damaged length prefix).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The fixed bincode configuration: little-endian, variable-length integers, a size limit.
fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_PAYLOAD>,
> {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_PAYLOAD>()
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// The header of one run (one core lifetime): who wrote it and with which settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The node's name (the core config's `name`).
    pub node: String,
    /// The core configuration the node ran with: replay uses exactly this.
    pub config: Config,
    /// The full effective configuration text the shell loaded (may be empty).
    pub config_text: String,
    /// The pgha version that wrote the run.
    pub pgha_version: String,
    /// The codec version of the run's payloads.
    pub codec_version: u32,
}

impl Header {
    /// A header for `config`, with this build's pgha and codec versions.
    pub fn new(config: Config, config_text: impl Into<String>) -> Header {
        Header {
            node: config.name.clone(),
            config,
            config_text: config_text.into(),
            pgha_version: env!("CARGO_PKG_VERSION").to_string(),
            codec_version: CODEC_VERSION,
        }
    }
}

/// A snapshot row: the complete node between two inputs (queues drained), so a journal
/// pruned before it still replays exactly from here.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub header: Header,
    pub node: Node,
}

/// Serialises exactly like [`Snapshot`], without cloning the node.
#[derive(Debug, Serialize)]
#[serde(rename = "Snapshot")]
pub(crate) struct SnapshotRef<'a> {
    pub header: &'a Header,
    pub node: &'a Node,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding into a Vec fails only past the size limit, which no core type approaches;
    // an empty payload then fails to decode and is reported as corrupt.
    bincode::serde::encode_to_vec(value, config()).unwrap_or_default()
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| CodecError(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after the payload",
            bytes.len() - used
        )));
    }
    Ok(value)
}

pub fn encode_input(input: &Input) -> Vec<u8> {
    encode(input)
}

pub fn decode_input(bytes: &[u8]) -> Result<Input, CodecError> {
    decode(bytes)
}

pub fn encode_transition(t: &Transition) -> Vec<u8> {
    encode(t)
}

pub fn decode_transition(bytes: &[u8]) -> Result<Transition, CodecError> {
    decode(bytes)
}

pub fn encode_command(c: &Command) -> Vec<u8> {
    encode(c)
}

pub fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    decode(bytes)
}

pub fn encode_header(h: &Header) -> Vec<u8> {
    encode(h)
}

/// The codec version a run header's payload names, read without decoding it: `codec_version`
/// is [`Header`]'s last field, a varint of one byte below 251. (Keep it the last field.)
pub fn header_codec_version(bytes: &[u8]) -> Option<u32> {
    bytes.last().filter(|b| **b < 251).map(|b| u32::from(*b))
}

/// A run header of any version this build reads, converted into today's [`Header`] (which
/// still names the version it was written with).
pub fn decode_header(bytes: &[u8]) -> Result<Header, CodecError> {
    let h = match header_codec_version(bytes) {
        Some(CODEC_VERSION) => decode::<Header>(bytes)?,
        Some(1) => decode::<v1::HeaderV1>(bytes)?.into_header(),
        Some(v) => return Err(unknown_version(v)),
        None => return Err(CodecError("no codec version at the header's end".into())),
    };
    match header_codec_version(bytes) {
        Some(v) if v == h.codec_version => Ok(h),
        _ => Err(CodecError(format!(
            "the header's codec version {} is not its last byte",
            h.codec_version
        ))),
    }
}

fn unknown_version(v: u32) -> CodecError {
    CodecError(format!(
        "codec version {v}: this pgha reads versions {OLDEST_CODEC_VERSION} to {CODEC_VERSION}"
    ))
}

/// Decodes a prefix of `bytes`: the value and the bytes it used.
fn decode_prefix<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<(T, usize)> {
    bincode::serde::decode_from_slice::<T, _>(bytes, config()).ok()
}

/// A snapshot of any version this build reads, converted into today's [`Snapshot`]. A
/// snapshot begins with its run's header, whose last field names the version of the node
/// that follows: the header is read as each known version's until one names that version.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, CodecError> {
    if let Some((header, used)) = decode_prefix::<Header>(bytes)
        && header.codec_version == CODEC_VERSION
    {
        let node = decode::<Node>(&bytes[used..])?;
        return Ok(Snapshot { header, node });
    }
    if let Some((header, used)) = decode_prefix::<v1::HeaderV1>(bytes)
        && header.codec_version == 1
    {
        let node = decode::<pgha_core::legacy::NodeV1>(&bytes[used..])?;
        return Ok(v1::snapshot(header, node));
    }
    Err(CodecError(format!(
        "a snapshot whose header is of no codec version this pgha reads ({OLDEST_CODEC_VERSION} to {CODEC_VERSION})"
    )))
}
