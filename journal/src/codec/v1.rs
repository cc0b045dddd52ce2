//! Codec 1 (pgha 0.1.0 before the master give-up and the peer daemon reports): its run
//! headers and snapshots, decoded with the core's mirrors of the old [`pgha_core::Config`]
//! and [`pgha_core::Node`] (`pgha_core::legacy`) and converted into today's. Its inputs,
//! transitions and commands decode as today's: their enums only gained variants at the end.

use pgha_core::legacy::{ConfigV1, NodeV1};
use serde::Deserialize;

use super::{Header, Snapshot};

/// [`Header`] as codec 1 encoded it.
#[derive(Debug, Deserialize)]
pub(super) struct HeaderV1 {
    node: String,
    config: ConfigV1,
    config_text: String,
    pgha_version: String,
    pub(super) codec_version: u32,
}

impl HeaderV1 {
    /// Today's header; it still names codec 1, so readers know which core wrote the run.
    pub(super) fn into_header(self) -> Header {
        Header {
            node: self.node,
            config: self.config.into_config(),
            config_text: self.config_text,
            pgha_version: self.pgha_version,
            codec_version: self.codec_version,
        }
    }
}

/// A codec 1 snapshot: its header, then the node.
pub(super) fn snapshot(header: HeaderV1, node: NodeV1) -> Snapshot {
    Snapshot {
        header: header.into_header(),
        node: node.into_node(),
    }
}
