//! The lease's hands: carries out one [`LeaseCommand`] of the core's lease machine
//! (`pgha_core::lease`) with the [`Gateway`] and returns the [`LeaseEvent`] the core expects
//! for it, the reply tagged with the command's request id. No policy: what a reply means (lead,
//! stop, retry) is decided in the core; this only translates.
//!
//! - Keys: the leader key is `/pgha/<cluster>/leader`; its value is the member's name as plain
//!   text (issue 13's contract, so `vip-manager`-style tools can follow it).
//! - Errors are the core's "could not tell" ([`EtcdFault`]): unreachable or timed out, refused,
//!   stale raft term, unreadable reply. None of them ever says the key or the lease is lost.
//! - A keepalive answered without a TTL is [`EtcdReply::Gone`]; a failed txn carries the key as
//!   its failure branch read it ([`EtcdReply::TxnFailed`]).

use pgha_core::lease::{
    EtcdFault, EtcdReply, KeyCompare, LeaderKey, LeaseCommand, LeaseEvent, LeaseId, LeaseOp, Name,
};

use super::{Compare, EtcdError, Gateway, Header, KeepAlive, KeyValue, Op};

/// The leader key of `cluster`.
pub fn leader_key(cluster: &str) -> Vec<u8> {
    format!("/pgha/{cluster}/leader").into_bytes()
}

/// The leader key as a reply showed it: absent (at the store's revision of the reply),
/// held by a member name (at its mod_revision), or holding something else.
pub fn leader_key_view(header: &Header, kv: Option<&KeyValue>) -> LeaderKey {
    let Some(kv) = kv else {
        return LeaderKey::Absent {
            revision: revision(header.revision),
        };
    };
    let revision = revision(kv.mod_revision);
    match std::str::from_utf8(&kv.value).ok().and_then(Name::new) {
        Some(holder) => LeaderKey::Held {
            holder,
            revision,
            created: self::revision(kv.create_revision),
        },
        None => LeaderKey::Unreadable { revision },
    }
}

/// etcd's revisions are positive; a negative one (garbage) reads as 0, the oldest view.
fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// What an error means to the core: "could not tell", of one kind. When every endpoint failed,
/// the kind all of them share, else unreachable (none gave an answer to act on in time).
pub fn fault(e: &EtcdError) -> EtcdFault {
    match e {
        EtcdError::Unreachable { .. } => EtcdFault::Unreachable,
        EtcdError::Refused { .. } => EtcdFault::Refused,
        EtcdError::StaleTerm { .. } => EtcdFault::StaleTerm,
        EtcdError::BadReply { .. } => EtcdFault::BadReply,
        EtcdError::AllFailed { tried } => {
            let mut kinds = tried.iter().map(fault);
            match kinds.next() {
                Some(first) if kinds.all(|k| k == first) => first,
                _ => EtcdFault::Unreachable,
            }
        }
    }
}

/// Carries out the lease's commands for one member of one cluster.
#[derive(Debug, Clone)]
pub struct Effector {
    gateway: Gateway,
    key: Vec<u8>,
    me: Name,
}

impl Effector {
    pub fn new(gateway: Gateway, cluster: &str, me: Name) -> Effector {
        Effector {
            gateway,
            key: leader_key(cluster),
            me,
        }
    }

    pub fn gateway(&mut self) -> &mut Gateway {
        &mut self.gateway
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Carries out `cmd` (blocking, bounded by the gateway's `retry_timeout`) and returns its
    /// answer as the core's input. The last error, if any, is returned too, for the log.
    pub fn run(&mut self, cmd: LeaseCommand) -> (LeaseEvent, Option<EtcdError>) {
        let (reply, error) = match self.reply(cmd.op) {
            Ok(reply) => (reply, None),
            Err(e) => (EtcdReply::Error(fault(&e)), Some(e)),
        };
        (LeaseEvent::Reply { id: cmd.id, reply }, error)
    }

    fn reply(&mut self, op: LeaseOp) -> Result<EtcdReply, EtcdError> {
        let g = &mut self.gateway;
        Ok(match op {
            LeaseOp::Grant { ttl_ms } => {
                // Whole seconds, rounded up: never a shorter lease than asked.
                let ttl_s = i64::try_from(ttl_ms.div_ceil(1000)).unwrap_or(i64::MAX);
                let (_, lease, granted) = g.lease_grant(ttl_s.max(1))?;
                EtcdReply::Granted {
                    lease: LeaseId(lease),
                    ttl_ms: seconds_to_ms(granted),
                }
            }
            LeaseOp::KeepAlive { lease } => match g.lease_keepalive(lease.0)?.1 {
                KeepAlive::Alive { ttl_s } => EtcdReply::Alive {
                    ttl_ms: seconds_to_ms(ttl_s),
                },
                KeepAlive::Gone => EtcdReply::Gone,
            },
            LeaseOp::Acquire { .. }
            | LeaseOp::Renew { .. }
            | LeaseOp::Confirm { .. }
            | LeaseOp::Delete { .. } => self.txn(op)?,
            LeaseOp::Revoke { lease } => {
                g.lease_revoke(lease.0)?;
                EtcdReply::Revoked
            }
            LeaseOp::ReadKey => {
                let (h, kv) = g.get(&self.key)?;
                EtcdReply::Key(leader_key_view(&h, kv.as_ref()))
            }
        })
    }

    /// The core's compare as etcd's, on the leader key.
    fn compare(&self, c: KeyCompare) -> Compare {
        let key = self.key.clone();
        let int = |r: u64| i64::try_from(r).unwrap_or(i64::MAX);
        match c {
            KeyCompare::Created(r) => Compare::CreateRevision(key, int(r)),
            KeyCompare::Modified(r) => Compare::ModRevision(key, int(r)),
            KeyCompare::ValueIsMe => Compare::Value(key, self.me.as_str().as_bytes().to_vec()),
            KeyCompare::Lease(lease) => Compare::Lease(key, lease.0),
        }
    }

    /// A leader-key txn: if every compare of `op` holds, put my name bound to its lease (or,
    /// for a delete, delete the key); else read the key.
    fn txn(&mut self, op: LeaseOp) -> Result<EtcdReply, EtcdError> {
        let compares: Vec<Compare> = op
            .compares()
            .into_iter()
            .flatten()
            .map(|c| self.compare(c))
            .collect();
        let key = self.key.clone();
        let success = match op.puts_with() {
            Some(lease) => Op::Put {
                key: key.clone(),
                value: self.me.as_str().as_bytes().to_vec(),
                lease: Some(lease.0),
            },
            None => Op::Delete { key: key.clone() },
        };
        let r = self
            .gateway
            .txn(&compares, &[success], &[Op::Get { key }])?;
        Ok(if r.succeeded {
            EtcdReply::TxnSucceeded {
                revision: revision(r.header.revision),
            }
        } else {
            EtcdReply::TxnFailed {
                key: leader_key_view(&r.header, r.read.first()),
            }
        })
    }
}

fn seconds_to_ms(s: i64) -> u64 {
    u64::try_from(s).unwrap_or(0).saturating_mul(1000)
}
