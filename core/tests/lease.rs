//! The etcd lease's decisions (`pgha_core::lease`) on a virtual clock, against a small
//! linearizable model of etcd (one leader key, leases that expire), and the candidate choice.

use pgha_core::Lsn;
use pgha_core::Timestamp;
use pgha_core::lease::*;

const SEC: u64 = 1000;

/// ttl 10 s, loop_wait 2 s, retry_timeout 3 s, margin 1 s.
fn config() -> LeaseConfig {
    LeaseConfig {
        ttl_ms: 10 * SEC,
        loop_wait_ms: 2 * SEC,
        retry_timeout_ms: 3 * SEC,
        margin_ms: SEC,
    }
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// etcd as the lease sees it: linearizable, one leader key, leases timed from when etcd
/// processes a grant or keepalive.
#[derive(Default)]
struct Etcd {
    revision: u64,
    /// Holder, lease, mod_revision, create_revision.
    key: Option<(Name, LeaseId, u64, u64)>,
    /// Lease, expiry, TTL.
    leases: Vec<(LeaseId, u64, u64)>,
}

impl Etcd {
    fn view(&self) -> LeaderKey {
        match self.key {
            Some((holder, _, revision, created)) => LeaderKey::Held {
                holder,
                revision,
                created,
            },
            None => LeaderKey::Absent {
                revision: self.revision,
            },
        }
    }

    fn expire(&mut self, now: u64) {
        self.leases.retain(|&(_, exp, _)| exp > now);
        if let Some((_, lease, _, _)) = self.key
            && !self.leases.iter().any(|l| l.0 == lease)
        {
            self.key = None;
            self.revision += 1;
        }
    }

    fn alive(&self, lease: LeaseId) -> bool {
        self.leases.iter().any(|l| l.0 == lease)
    }

    fn put(&mut self, me: Name, lease: LeaseId) -> EtcdReply {
        if !self.alive(lease) {
            return EtcdReply::Error(EtcdFault::Refused);
        }
        self.revision += 1;
        let created = self.key.map_or(self.revision, |k| k.3);
        self.key = Some((me, lease, self.revision, created));
        EtcdReply::TxnSucceeded {
            revision: self.revision,
        }
    }

    fn answer(&mut self, now: u64, me: Name, op: LeaseOp) -> EtcdReply {
        self.expire(now);
        let holds = |c: KeyCompare| match (self.key, c) {
            (None, KeyCompare::ValueIsMe) => false,
            (None, KeyCompare::Created(r) | KeyCompare::Modified(r)) => r == 0,
            (None, KeyCompare::Lease(l)) => l.0 == 0,
            (Some((h, _, _, _)), KeyCompare::ValueIsMe) => h == me,
            (Some((_, _, m, _)), KeyCompare::Modified(r)) => m == r,
            (Some((_, _, _, c)), KeyCompare::Created(r)) => c == r,
            (Some((_, l, _, _)), KeyCompare::Lease(lease)) => l == lease,
        };
        let hold = op.compares().into_iter().flatten().all(holds);
        match op {
            LeaseOp::Grant { ttl_ms } => {
                let lease = LeaseId(100 + self.leases.len() as i64 + self.revision as i64);
                self.leases.push((lease, now + ttl_ms, ttl_ms));
                EtcdReply::Granted { lease, ttl_ms }
            }
            LeaseOp::KeepAlive { lease } => match self.leases.iter_mut().find(|l| l.0 == lease) {
                Some(l) => {
                    l.1 = now + l.2;
                    EtcdReply::Alive { ttl_ms: l.2 }
                }
                None => EtcdReply::Gone,
            },
            LeaseOp::Acquire { lease }
            | LeaseOp::Renew { lease, .. }
            | LeaseOp::Confirm { lease, .. }
                if hold =>
            {
                self.put(me, lease)
            }
            LeaseOp::Delete { .. } if hold => {
                self.revision += 1;
                self.key = None;
                EtcdReply::TxnSucceeded {
                    revision: self.revision,
                }
            }
            LeaseOp::Acquire { .. }
            | LeaseOp::Renew { .. }
            | LeaseOp::Confirm { .. }
            | LeaseOp::Delete { .. } => EtcdReply::TxnFailed { key: self.view() },
            LeaseOp::Revoke { lease } => {
                self.leases.retain(|l| l.0 != lease);
                self.expire(now);
                EtcdReply::Revoked
            }
            LeaseOp::ReadKey => EtcdReply::Key(self.view()),
        }
    }
}

/// One member: its lease, what it asked for (with when), what it decided (with when).
struct Member {
    me: Name,
    lease: Lease,
    pending: Vec<(u64, LeaseCommand)>,
    decisions: Vec<(u64, LeaseDecision)>,
    /// Send times of the keepalives (and grants) etcd answered with success.
    renewed: Vec<u64>,
}

impl Member {
    fn new(n: &str) -> Member {
        Member {
            me: name(n),
            lease: Lease::new(config(), name(n)),
            pending: Vec::new(),
            decisions: Vec::new(),
            renewed: Vec::new(),
        }
    }

    fn drain(&mut self, now: u64) {
        while let Some(o) = self.lease.poll_output() {
            match o {
                LeaseOutput::Command(c) => self.pending.push((now, c)),
                LeaseOutput::Decision(d) => self.decisions.push((now, d)),
            }
        }
    }

    fn handle(&mut self, now: u64, event: LeaseEvent) {
        self.lease.handle(Timestamp(now), event);
        self.drain(now);
    }

    fn timeout(&mut self, now: u64) {
        self.lease.handle_timeout(Timestamp(now));
        self.drain(now);
    }

    fn reply(&mut self, now: u64, id: RequestId, reply: EtcdReply) {
        self.handle(now, LeaseEvent::Reply { id, reply });
    }

    /// etcd answers every pending request, in order, at `now`.
    fn serve(&mut self, etcd: &mut Etcd, now: u64) {
        while !self.pending.is_empty() {
            let (sent, c) = self.pending.remove(0);
            let reply = etcd.answer(now, self.me, c.op);
            if matches!(reply, EtcdReply::Alive { .. } | EtcdReply::Granted { .. }) {
                self.renewed.push(sent);
            }
            self.reply(now, c.id, reply);
        }
    }

    fn stops(&self) -> Vec<(u64, StopReason)> {
        self.decisions
            .iter()
            .filter_map(|&(t, d)| match d {
                LeaseDecision::MustStopWriting { reason } => Some((t, reason)),
                _ => None,
            })
            .collect()
    }

    fn last_decision(&self) -> LeaseDecision {
        self.decisions.last().unwrap().1
    }
}

/// Runs one member against etcd until `until`, answering everything at once.
fn run(m: &mut Member, etcd: &mut Etcd, now: &mut u64, until: u64) {
    for _ in 0..100_000 {
        m.serve(etcd, *now);
        let next = m.lease.poll_timeout().unwrap().as_millis();
        if next > until {
            *now = until;
            return;
        }
        *now = next.max(*now);
        m.timeout(*now);
    }
    panic!("no time passes");
}

/// A member holding the key at `now`, served by `etcd`.
fn holder(etcd: &mut Etcd, now: &mut u64) -> Member {
    let mut a = Member::new("db0");
    a.handle(*now, LeaseEvent::Start);
    a.handle(*now, LeaseEvent::Candidate(true));
    run(&mut a, etcd, now, 5 * SEC);
    assert!(matches!(a.last_decision(), LeaseDecision::MayLead { .. }));
    assert!(a.lease.may_write());
    a
}

#[test]
fn the_holder_stops_writing_before_send_time_plus_ttl_even_when_every_renewal_answer_is_lost() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = holder(&mut etcd, &mut now);
    let last_ok = *a.renewed.last().unwrap();
    let timers = a.lease.timers();
    assert_eq!(
        timers.get(LeaseTimer::StopWriting),
        Some(a.lease.deadline())
    );
    assert_eq!(timers.next_deadline(), a.lease.poll_timeout());
    // From now on etcd processes every request, but no answer comes back.
    let stop_at = loop {
        for (_, c) in a.pending.drain(..) {
            etcd.answer(now, a.me, c.op);
        }
        if let Some(&(t, _)) = a.stops().first() {
            break t;
        }
        now = a.lease.poll_timeout().unwrap().as_millis();
        assert!(now < 60 * SEC, "never stopped");
        a.timeout(now);
    };
    let c = config();
    assert!(
        stop_at + c.margin_ms <= last_ok + c.ttl_ms,
        "stopped at {stop_at}, last renewal sent at {last_ok}"
    );
    assert!(matches!(
        a.stops()[0].1,
        StopReason::LeaseExpiring { last_renewal, .. } if last_renewal.as_millis() == last_ok
    ));
    // etcd kept the lease alive longer (it processed the renewals): stopping was early, never late.
    assert!(etcd.key.is_some());
    assert!(!a.lease.may_write());
}

#[test]
fn a_late_success_of_an_old_renewal_does_not_extend_past_its_own_send_time_plus_ttl() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = holder(&mut etcd, &mut now);
    let c = config();
    // The next round's keepalive goes out and its answer is held back.
    now = a.lease.poll_timeout().unwrap().as_millis();
    a.timeout(now);
    let (old_sent, old) = a
        .pending
        .iter()
        .copied()
        .find(|(_, c)| matches!(c.op, LeaseOp::KeepAlive { .. }))
        .unwrap();
    a.pending.clear();
    // Everything after it fails.
    while now < old_sent + 6 * SEC {
        for (_, c) in std::mem::take(&mut a.pending) {
            a.reply(now, c.id, EtcdReply::Error(EtcdFault::Unreachable));
        }
        now = a.lease.poll_timeout().unwrap().as_millis();
        a.timeout(now);
    }
    assert!(a.stops().is_empty(), "{:?}", a.stops());
    // The old keepalive's success arrives now, 6 s after it was sent.
    let reply = etcd.answer(now, a.me, old.op);
    a.reply(now, old.id, reply);
    assert_eq!(
        a.lease.deadline().as_millis(),
        old_sent + c.ttl_ms - c.margin_ms
    );
    assert!(a.lease.deadline().as_millis() < now + c.ttl_ms - c.margin_ms);
    // Still nothing gets through: the stop comes by the old send time + TTL - margin.
    let stop_at = loop {
        for (_, c) in std::mem::take(&mut a.pending) {
            a.reply(now, c.id, EtcdReply::Error(EtcdFault::StaleTerm));
        }
        if let Some(&(t, _)) = a.stops().first() {
            break t;
        }
        now = a.lease.poll_timeout().unwrap().as_millis();
        assert!(now < 60 * SEC, "never stopped");
        a.timeout(now);
    };
    assert_eq!(stop_at, old_sent + c.ttl_ms - c.margin_ms);
}

#[test]
fn an_unreachable_answer_is_not_treated_as_lost_the_key() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = holder(&mut etcd, &mut now);
    let mut b = Member::new("db1");
    b.handle(now, LeaseEvent::Start);
    b.serve(&mut etcd, now);
    assert!(matches!(
        b.last_decision(),
        LeaseDecision::LeaderIs { name, .. } if name == a.me
    ));
    let (decided_a, decided_b) = (a.decisions.len(), b.decisions.len());
    // etcd is unreachable for 5 s: every request of both fails.
    let until = now + 5 * SEC;
    while now < until {
        for m in [&mut a, &mut b] {
            for (_, c) in std::mem::take(&mut m.pending) {
                m.reply(now, c.id, EtcdReply::Error(EtcdFault::Unreachable));
            }
        }
        now = [&a, &b]
            .iter()
            .filter_map(|m| m.lease.poll_timeout())
            .min()
            .unwrap()
            .as_millis();
        a.timeout(now);
        b.timeout(now);
    }
    // Then it answers again.
    for _ in 0..10 {
        a.serve(&mut etcd, now);
        b.serve(&mut etcd, now);
        now += SEC;
        a.timeout(now);
        b.timeout(now);
    }
    assert_eq!(a.decisions.len(), decided_a, "{:?}", a.decisions);
    assert_eq!(b.decisions.len(), decided_b, "{:?}", b.decisions);
    assert!(a.lease.may_write());
}

#[test]
fn two_nodes_racing_for_the_key_only_the_txn_winner_leads_and_the_loser_reports_leader_is() {
    let mut etcd = Etcd::default();
    let mut a = Member::new("db0");
    let mut b = Member::new("db1");
    for m in [&mut a, &mut b] {
        m.handle(0, LeaseEvent::Candidate(true));
        m.handle(0, LeaseEvent::Start);
    }
    // etcd answers in the order requests were sent, both members interleaved: both read the
    // key absent before either's txn arrives.
    let mut now = 0;
    for _ in 0..20 {
        let (ma, mb) = (a.pending.len(), b.pending.len());
        for i in 0..ma.max(mb) {
            for (m, n) in [(&mut a, ma), (&mut b, mb)] {
                if i < n {
                    let (_, c) = m.pending[i];
                    let reply = etcd.answer(now, m.me, c.op);
                    m.reply(now, c.id, reply);
                }
            }
        }
        a.pending.drain(..ma);
        b.pending.drain(..mb);
        now += 100;
        a.timeout(now);
        b.timeout(now);
    }
    let acquires = |m: &Member| m.lease.lease_id().is_some();
    assert!(acquires(&a) && acquires(&b));
    let leads = |m: &Member| {
        m.decisions
            .iter()
            .any(|(_, d)| matches!(d, LeaseDecision::MayLead { .. }))
    };
    assert!(leads(&a), "{:?}", a.decisions);
    assert!(!leads(&b), "{:?}", b.decisions);
    assert!(a.lease.may_write() && !b.lease.may_write());
    assert!(matches!(
        b.last_decision(),
        LeaseDecision::LeaderIs { name, .. } if name == a.me
    ));
    assert_eq!(etcd.key.unwrap().0, a.me);
}

#[test]
fn a_value_mismatch_on_renew_means_must_stop_writing_at_once() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = holder(&mut etcd, &mut now);
    // The key changes hands behind the holder's back (an operator's delete, another's txn).
    etcd.revision += 1;
    etcd.leases.push((LeaseId(7), u64::MAX, 10 * SEC));
    etcd.key = Some((name("db9"), LeaseId(7), etcd.revision, etcd.revision));
    now = a.lease.poll_timeout().unwrap().as_millis();
    a.timeout(now);
    let (_, renew) = a
        .pending
        .iter()
        .copied()
        .find(|(_, c)| matches!(c.op, LeaseOp::Renew { .. }))
        .unwrap();
    now += 40;
    let reply = etcd.answer(now, a.me, renew.op);
    assert!(matches!(reply, EtcdReply::TxnFailed { .. }));
    let before = a.decisions.len();
    a.reply(now, renew.id, reply);
    assert_eq!(
        a.decisions[before..],
        [
            (
                now,
                LeaseDecision::MustStopWriting {
                    reason: StopReason::KeyLost { key: etcd.view() }
                }
            ),
            (
                now,
                LeaseDecision::LeaderIs {
                    name: name("db9"),
                    revision: etcd.revision
                }
            )
        ]
    );
    assert!(!a.lease.may_write());
}

#[test]
fn a_watched_key_in_other_hands_stops_the_holder_at_once_and_a_stale_view_is_ignored() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = holder(&mut etcd, &mut now);
    let rev = etcd.revision;
    a.handle(
        now,
        LeaseEvent::Watched(LeaderKey::Absent { revision: rev - 1 }),
    );
    assert!(a.lease.may_write(), "an older revision changes nothing");
    now += 1;
    let gone = LeaderKey::Absent { revision: rev + 1 };
    a.handle(now, LeaseEvent::Watched(gone));
    assert_eq!(
        a.stops(),
        [(now, StopReason::KeyLost { key: gone })],
        "{:?}",
        a.decisions
    );
}

#[test]
fn a_lease_that_etcd_says_is_gone_stops_the_holder_and_a_new_lease_takes_the_key_again() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = holder(&mut etcd, &mut now);
    let old = a.lease.lease_id().unwrap();
    etcd.answer(now, a.me, LeaseOp::Revoke { lease: old });
    let t = now;
    run(&mut a, &mut etcd, &mut now, t + 10 * SEC);
    assert!(matches!(a.stops()[..], [(_, StopReason::LeaseGone { .. })]));
    assert_ne!(a.lease.lease_id(), Some(old));
    assert!(a.lease.may_write(), "{:?}", a.decisions);
    assert_eq!(etcd.key.unwrap().1, a.lease.lease_id().unwrap());
}

#[test]
fn a_step_downs_delete_removes_only_the_version_it_saw_and_follows_a_renewal_that_landed_first() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = holder(&mut etcd, &mut now);
    let seen = a.lease.key().unwrap().revision();
    a.handle(now, LeaseEvent::Release);
    let i = a
        .pending
        .iter()
        .position(|(_, c)| matches!(c.op, LeaseOp::Delete { .. }))
        .expect("a delete");
    let (_, delete) = a.pending.remove(i);
    assert!(
        matches!(delete.op, LeaseOp::Delete { seen: s, .. } if s == seen),
        "{delete:?} {seen}"
    );
    // A renewal sent before the step-down lands first: the key's version moves on.
    etcd.revision += 1;
    if let Some(k) = etcd.key.as_mut() {
        k.2 = etcd.revision;
    }
    let reply = etcd.answer(now, a.me, delete.op);
    assert!(matches!(reply, EtcdReply::TxnFailed { .. }), "{reply:?}");
    a.reply(now, delete.id, reply);
    assert!(etcd.key.is_some());
    // Still my name, at a newer version: that one is deleted, after the retry pause.
    let t = now;
    run(&mut a, &mut etcd, &mut now, t + 5 * SEC);
    assert!(etcd.key.is_none());
    assert!(!a.lease.may_write());
    // The first delete, repeated late after the key was taken again, leaves it.
    a.handle(now, LeaseEvent::Candidate(true));
    run(&mut a, &mut etcd, &mut now, t + 10 * SEC);
    assert!(a.lease.may_write());
    let reply = etcd.answer(now, a.me, delete.op);
    assert!(matches!(reply, EtcdReply::TxnFailed { .. }), "{reply:?}");
    assert_eq!(etcd.key.map(|k| k.0), Some(a.me));
}

#[test]
fn a_clean_step_down_stops_writing_before_the_key_is_deleted_and_a_shutdown_revokes_the_lease() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = holder(&mut etcd, &mut now);
    a.handle(now, LeaseEvent::Release);
    assert_eq!(a.stops(), [(now, StopReason::Released)]);
    assert!(etcd.key.is_some(), "not deleted before the node was told");
    a.serve(&mut etcd, now);
    assert!(etcd.key.is_none());
    assert!(matches!(a.last_decision(), LeaseDecision::NoLeader { .. }));
    // No longer a candidate: it does not take the key again.
    let t = now;
    run(&mut a, &mut etcd, &mut now, t + 10 * SEC);
    assert!(etcd.key.is_none());
    assert!(!a.lease.may_write());
    a.handle(now, LeaseEvent::Shutdown);
    assert!(matches!(
        a.pending[..],
        [(
            _,
            LeaseCommand {
                op: LeaseOp::Revoke { .. },
                ..
            }
        )]
    ));
    a.serve(&mut etcd, now);
    assert!(etcd.leases.is_empty());
    assert_eq!(a.lease.poll_timeout(), None);
}

#[test]
fn the_lease_timings_are_checked() {
    assert_eq!(config().validate(), Ok(()));
    let c = |ttl_ms, loop_wait_ms, retry_timeout_ms, margin_ms| LeaseConfig {
        ttl_ms,
        loop_wait_ms,
        retry_timeout_ms,
        margin_ms,
    };
    // Patroni's defaults, with a 2 s margin.
    assert_eq!(c(30_000, 10_000, 10_000, 2_000).validate(), Ok(()));
    assert_eq!(
        c(30_000, 11_000, 10_000, 2_000).validate(),
        Err(LeaseConfigError::TtlTooShort)
    );
    assert_eq!(c(30_000, 10_000, 10_000, 10_000).validate(), Ok(()));
    assert_eq!(
        c(30_000, 10_000, 10_000, 10_001).validate(),
        Err(LeaseConfigError::Margin)
    );
    assert_eq!(
        c(30_000, 10_000, 10_000, 0).validate(),
        Err(LeaseConfigError::Margin)
    );
    assert_eq!(c(30_000, 0, 1, 1).validate(), Err(LeaseConfigError::Zero));
}

fn member(n: &str, dc: &str, lsn: u64) -> MemberRecord {
    MemberRecord {
        name: name(n),
        dc: name(dc),
        nofailover: false,
        priority: 0,
        timeline: 2,
        received_lsn: Lsn(lsn),
        replayed_lsn: Lsn(lsn.saturating_sub(10)),
    }
}

fn rules() -> FailoverRules {
    FailoverRules {
        primary_dc: name("east"),
        master_lsn: Lsn(1000),
        maximum_lag: 100,
    }
}

fn chosen(members: &[MemberRecord]) -> Result<&str, NoCandidate> {
    choose_candidate(members, &rules()).map(|m| m.name.as_str())
}

#[test]
fn candidate_choice_never_picks_a_member_outside_the_primary_dc_and_says_why() {
    let members = [member("db0", "west", 1000), member("db1", "east", 950)];
    assert_eq!(chosen(&members), Ok("db1"));
    assert_eq!(
        eligibility(&members[0], 2, &rules()),
        Err(Ineligible::OtherDc { dc: name("west") })
    );
    assert_eq!(
        chosen(&members[..1]),
        Err(NoCandidate {
            members: 1,
            other_dc: 1,
            ..NoCandidate::default()
        })
    );
}

#[test]
fn candidate_choice_skips_a_nofailover_member() {
    let mut members = [member("db0", "east", 1000), member("db1", "east", 950)];
    members[0].nofailover = true;
    assert_eq!(chosen(&members), Ok("db1"));
    assert_eq!(
        eligibility(&members[0], 2, &rules()),
        Err(Ineligible::NoFailover)
    );
}

#[test]
fn candidate_choice_skips_a_member_lagging_beyond_the_bound() {
    let members = [member("db0", "east", 899), member("db1", "east", 900)];
    assert_eq!(chosen(&members), Ok("db1"));
    assert_eq!(
        chosen(&members[..1]),
        Err(NoCandidate {
            members: 1,
            lagging: 1,
            ..NoCandidate::default()
        })
    );
    assert_eq!(
        eligibility(&members[0], 2, &rules()),
        Err(Ineligible::Lagging {
            lag: 101,
            maximum: 100
        })
    );
}

#[test]
fn candidate_choice_skips_a_member_on_an_older_timeline_whatever_its_position() {
    let mut members = [member("db0", "east", 2000), member("db1", "east", 950)];
    members[0].timeline = 1;
    assert_eq!(chosen(&members), Ok("db1"));
    assert_eq!(
        eligibility(&members[0], 2, &rules()),
        Err(Ineligible::OldTimeline {
            timeline: 1,
            newest: 2
        })
    );
}

#[test]
fn candidate_choice_orders_by_position_then_priority_then_name() {
    let mut members = [
        member("db2", "east", 950),
        member("db1", "east", 950),
        member("db0", "east", 940),
    ];
    assert_eq!(chosen(&members), Ok("db1"), "a tie goes to the first name");
    members[0].priority = 1;
    assert_eq!(chosen(&members), Ok("db2"), "then to the higher priority");
    members[2].priority = -5;
    members[2].received_lsn = Lsn(990);
    assert_eq!(chosen(&members), Ok("db0"), "position first");
    assert_eq!(
        chosen(&[]),
        Err(NoCandidate::default()),
        "no members, no candidate"
    );
}

#[test]
fn decisions_and_events_are_serializable_and_names_are_bounded() {
    fn serde<T: serde::Serialize + serde::de::DeserializeOwned>() {}
    serde::<LeaseEvent>();
    serde::<LeaseOutput>();
    serde::<MemberRecord>();
    assert!(Name::new(&"x".repeat(NAME_MAX)).is_some());
    assert!(Name::new(&"x".repeat(NAME_MAX + 1)).is_none());
    assert!(Name::new("").is_none());
    assert!(Name::new("db\n0").is_none());
}

#[test]
fn a_key_with_this_nodes_name_is_led_only_after_a_renewal_confirms_it() {
    let (mut etcd, mut now) = (Etcd::default(), 0);
    let mut a = Member::new("db0");
    a.handle(now, LeaseEvent::Candidate(true));
    a.handle(now, LeaseEvent::Start);
    // The acquire reaches etcd but its answer is lost.
    let acquire = loop {
        assert!(!a.pending.is_empty(), "no acquire");
        if let Some(i) = a
            .pending
            .iter()
            .position(|(_, c)| matches!(c.op, LeaseOp::Acquire { .. }))
        {
            break a.pending.remove(i).1;
        }
        let (_, c) = a.pending.remove(0);
        let reply = etcd.answer(now, a.me, c.op);
        a.reply(now, c.id, reply);
    };
    etcd.answer(now, a.me, acquire.op);
    a.serve(&mut etcd, now);
    now += config().retry_timeout_ms;
    a.timeout(now);
    assert!(
        !a.lease.may_write(),
        "not before a txn says the key is ours"
    );
    // It leads once a `Confirm` (value == me, mod_revision == the version read) has taken the
    // key over.
    let t = now;
    let mut ops = Vec::new();
    while !a.lease.may_write() && now < t + 5 * SEC {
        ops.extend(a.pending.iter().map(|(_, c)| c.op));
        a.serve(&mut etcd, now);
        now += 100;
        a.timeout(now);
    }
    assert!(a.lease.may_write(), "{ops:?}");
    assert!(ops.iter().any(|op| matches!(op, LeaseOp::Confirm { .. })));
    // A member that is not a candidate leaves such a key alone until the node releases it.
    let mut b = Member::new("db0");
    b.handle(now, LeaseEvent::Start);
    let t = now;
    run(&mut b, &mut etcd, &mut now, t + 3 * SEC);
    assert!(!b.lease.may_write());
    assert_eq!(
        etcd.key.unwrap().0,
        b.me,
        "not deleted behind a node that may write"
    );
    b.handle(now, LeaseEvent::Release);
    b.serve(&mut etcd, now);
    assert!(etcd.key.is_none());
}

#[test]
fn with_patronis_timings_a_keepalive_lost_for_a_whole_retry_timeout_is_sent_again_at_the_next_round()
 {
    let c = LeaseConfig {
        ttl_ms: 30 * SEC,
        loop_wait_ms: 10 * SEC,
        retry_timeout_ms: 10 * SEC,
        margin_ms: 2 * SEC,
    };
    let mut lease = Lease::new(c, name("db0"));
    lease.handle(Timestamp(0), LeaseEvent::Start);
    let grant = match lease.poll_output() {
        Some(LeaseOutput::Command(c)) => c,
        o => panic!("{o:?}"),
    };
    while lease.poll_output().is_some() {}
    let reply = EtcdReply::Granted {
        lease: LeaseId(1),
        ttl_ms: c.ttl_ms,
    };
    lease.handle(
        Timestamp(5),
        LeaseEvent::Reply {
            id: grant.id,
            reply,
        },
    );
    while lease.poll_output().is_some() {}
    assert_eq!(
        lease.deadline(),
        Timestamp(28 * SEC),
        "from the grant's send time"
    );
    let mut keepalives = Vec::new();
    let mut now = 0;
    while now < 28 * SEC {
        now = lease.poll_timeout().unwrap().as_millis();
        lease.handle_timeout(Timestamp(now));
        while let Some(o) = lease.poll_output() {
            if let LeaseOutput::Command(LeaseCommand {
                op: LeaseOp::KeepAlive { .. },
                ..
            }) = o
            {
                keepalives.push(now);
            }
        }
    }
    assert_eq!(keepalives[..2], [10 * SEC, 20 * SEC]);
}
