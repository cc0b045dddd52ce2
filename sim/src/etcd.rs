//! A model of etcd 3.4 as the lease (`pgha_core::lease`) sees it (see
//! /work/shared/reference/etcd.md): one linearizable store with a revision, the leader key
//! with its create and mod revisions and the lease it is bound to, txns whose compares
//! ([`LeaseOp::compares`]: create_revision, mod_revision, value, lease) are evaluated as etcd
//! does (all must hold; on an absent key the revisions and the lease compare as 0 and a value
//! compare fails), leases timed on etcd's own clock (the simulator's
//! true time) from when etcd *processes* a grant or keepalive, revoke and expiry deleting the
//! keys bound to the lease, and a leader change: while the election runs no lease expires and
//! requests wait or fail; the new leader then gives every lease a fresh TTL (real etcd's
//! `lessor.Promote`), so a key can outlive "last keepalive + TTL".

use pgha_core::lease::{EtcdFault, EtcdReply, KeyCompare, LeaderKey, LeaseId, LeaseOp, Name};

/// The server's smallest TTL (ceil(1.5 × election timeout) with the defaults: 2 s).
pub const MIN_TTL_MS: u64 = 2000;

/// The leader key as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    pub value: Name,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub lease: LeaseId,
}

/// A lease as etcd keeps it: expiry on etcd's clock (milliseconds of true time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdLease {
    pub id: LeaseId,
    pub ttl_ms: u64,
    pub expires: u64,
}

/// The etcd cluster, linearizable: every request takes effect at the moment it is processed.
#[derive(Clone, Debug, Default)]
pub struct Etcd {
    pub revision: u64,
    pub key: Option<KeyEntry>,
    pub leases: Vec<EtcdLease>,
    next_lease: i64,
    /// An election runs until then: no leader, no expiry.
    pub electing_until: Option<u64>,
    /// The key changed since the last [`Etcd::take_changed`] (for the watches).
    changed: bool,
}

impl Etcd {
    pub fn new() -> Etcd {
        Etcd {
            revision: 1,
            next_lease: 0x10,
            ..Etcd::default()
        }
    }

    /// The key as a read (or a failed txn's get) shows it.
    pub fn view(&self) -> LeaderKey {
        match self.key {
            Some(k) => LeaderKey::Held {
                holder: k.value,
                revision: k.mod_revision,
                created: k.create_revision,
            },
            None => LeaderKey::Absent {
                revision: self.revision,
            },
        }
    }

    /// Who holds the key now (etcd's truth).
    pub fn holder(&self) -> Option<Name> {
        self.key.map(|k| k.value)
    }

    pub fn electing(&self) -> bool {
        self.electing_until.is_some()
    }

    /// Whether the key changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// When the next lease expires (none while an election runs).
    pub fn next_expiry(&self) -> Option<u64> {
        if self.electing() {
            return None;
        }
        self.leases.iter().map(|l| l.expires).min()
    }

    /// Expires every lease whose time has come (`expires <= now`), deleting its keys.
    pub fn expire(&mut self, now: u64) {
        if self.electing() {
            return;
        }
        while let Some(pos) = self.leases.iter().position(|l| l.expires <= now) {
            let gone = self.leases.remove(pos);
            self.drop_keys_of(gone.id);
        }
    }

    fn drop_keys_of(&mut self, lease: LeaseId) {
        if self.key.is_some_and(|k| k.lease == lease) {
            self.delete_key();
        }
    }

    fn delete_key(&mut self) {
        self.revision += 1;
        self.key = None;
        self.changed = true;
    }

    /// Another key of the cluster was written (member records, config): the store's revision
    /// moves on without the leader key changing.
    pub fn bump(&mut self) {
        self.revision += 1;
    }

    /// The etcd leader is lost until `until`.
    pub fn start_election(&mut self, until: u64) {
        self.electing_until = Some(self.electing_until.map_or(until, |u| u.max(until)));
    }

    /// A new leader: every lease gets a fresh TTL from now (never a shorter one).
    pub fn end_election(&mut self, now: u64) {
        self.electing_until = None;
        for l in &mut self.leases {
            l.expires = l.expires.max(now + l.ttl_ms);
        }
    }

    fn alive(&self, lease: LeaseId) -> bool {
        self.leases.iter().any(|l| l.id == lease)
    }

    /// A txn's success branch: put the key = `me` bound to `lease` (the whole txn fails if
    /// the lease is unknown, as etcd's "requested lease not found").
    fn put(&mut self, me: Name, lease: LeaseId) -> EtcdReply {
        if !self.alive(lease) {
            return EtcdReply::Error(EtcdFault::Refused);
        }
        self.revision += 1;
        let create_revision = self.key.map_or(self.revision, |k| k.create_revision);
        self.key = Some(KeyEntry {
            value: me,
            create_revision,
            mod_revision: self.revision,
            lease,
        });
        self.changed = true;
        EtcdReply::TxnSucceeded {
            revision: self.revision,
        }
    }

    /// Whether a txn's compare from member `me` holds, as etcd 3.4 evaluates it
    /// (`applyCompare`): on an absent key a value compare fails and the others compare 0.
    fn holds(&self, me: Name, c: KeyCompare) -> bool {
        let Some(k) = self.key else {
            return match c {
                KeyCompare::ValueIsMe => false,
                KeyCompare::Created(r) | KeyCompare::Modified(r) => r == 0,
                KeyCompare::Lease(l) => l.0 == 0,
            };
        };
        match c {
            KeyCompare::Created(r) => k.create_revision == r,
            KeyCompare::Modified(r) => k.mod_revision == r,
            KeyCompare::ValueIsMe => k.value == me,
            KeyCompare::Lease(l) => k.lease == l,
        }
    }

    /// Processes `op` from member `me` at `now` (the caller checks there is a leader).
    pub fn answer(&mut self, now: u64, me: Name, op: LeaseOp) -> EtcdReply {
        self.expire(now);
        let compares_hold = op
            .compares()
            .into_iter()
            .flatten()
            .all(|c| self.holds(me, c));
        match op {
            LeaseOp::Grant { ttl_ms } => {
                let ttl_ms = ttl_ms.div_ceil(1000).saturating_mul(1000).max(MIN_TTL_MS);
                let id = LeaseId(self.next_lease);
                self.next_lease += 1;
                self.leases.push(EtcdLease {
                    id,
                    ttl_ms,
                    expires: now + ttl_ms,
                });
                EtcdReply::Granted { lease: id, ttl_ms }
            }
            LeaseOp::KeepAlive { lease } => match self.leases.iter_mut().find(|l| l.id == lease) {
                Some(l) => {
                    l.expires = l.expires.max(now + l.ttl_ms);
                    EtcdReply::Alive { ttl_ms: l.ttl_ms }
                }
                None => EtcdReply::Gone,
            },
            LeaseOp::Acquire { lease }
            | LeaseOp::Renew { lease, .. }
            | LeaseOp::Confirm { lease, .. }
                if compares_hold =>
            {
                self.put(me, lease)
            }
            LeaseOp::Delete { .. } if compares_hold => {
                self.delete_key();
                EtcdReply::TxnSucceeded {
                    revision: self.revision,
                }
            }
            LeaseOp::Acquire { .. }
            | LeaseOp::Renew { .. }
            | LeaseOp::Confirm { .. }
            | LeaseOp::Delete { .. } => EtcdReply::TxnFailed { key: self.view() },
            LeaseOp::Revoke { lease } => {
                if !self.alive(lease) {
                    return EtcdReply::Error(EtcdFault::Refused);
                }
                self.leases.retain(|l| l.id != lease);
                self.drop_keys_of(lease);
                EtcdReply::Revoked
            }
            LeaseOp::ReadKey => EtcdReply::Key(self.view()),
        }
    }
}
