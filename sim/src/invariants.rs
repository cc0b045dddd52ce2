//! The invariant checks run after every step and at every transition, and the verdicts on
//! acknowledged writes (see docs/simulator.md).

use pgha_core::{Isolation, PeerId, Reason, SplitBrainRule, StartAs, State, Timestamp, Transition};

use crate::network::DELAY_MAX_MS;
use crate::postgres::{Branch, BranchKind, Phase, STOP_MAX_MS, holds};
use crate::world::{MAX_NODES, World};

/// Why a write was acknowledged on a branch after another node promoted off it (a write
/// the promoted node's history can never hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// Violation (issue 11 item 1): its postmaster hung and its daemon, watching, did not
    /// kill the backends within `master_give_up + probe_interval + stop allowance`.
    Hung,
    /// Violation (item 4): isolation = fence, and it could not reach the promoted node for
    /// `master_give_up` before the promotion.
    Isolated,
    /// Violation: in sight both ways longer than the split-brain bound.
    Seen,
    /// Violation: in sight both ways, within the split-brain bound (a race: e.g. it led while
    /// the peer promoted).
    Race,
    /// Conceded: an operator's or an outside promotion.
    ByHand,
    /// Conceded: it led (after the promotion) while the promoted node's daemon was out of
    /// its sight: a dead or cut-off peer, two histories, one lost whatever the rule.
    LedBlind,
    /// Conceded: its daemon was down, paused, or (re)started around the promotion (docs/core.md,
    /// known limits).
    DaemonDown,
    /// Conceded: isolation = keep-serving and the link was cut (the documented trade-off).
    KeepServing,
    /// Conceded: the promoted node was gone (neither its daemon nor its postgres answering):
    /// nothing told the writer of the promotion.
    PeerDown,
    /// Conceded: probe loss (the promoted node may have promoted beside a reachable master).
    Loss,
    /// Conceded: a server full (out of sight of the split-brain rule, docs/core.md).
    Full,
    /// Conceded: a cut link (or one just healed) the writer could not act on: one-way (it
    /// reached the promoted node, which could not reach it), or begun less than
    /// `master_give_up` before the promotion.
    OneWay,
}

impl Stale {
    pub const COUNT: usize = 12;
    /// Every cause, in the order of [`Stats::stale`].
    pub const ALL: [Stale; Stale::COUNT] = [
        Stale::Hung,
        Stale::Isolated,
        Stale::Seen,
        Stale::Race,
        Stale::ByHand,
        Stale::LedBlind,
        Stale::DaemonDown,
        Stale::KeepServing,
        Stale::PeerDown,
        Stale::Loss,
        Stale::Full,
        Stale::OneWay,
    ];

    pub fn is_violation(self) -> bool {
        matches!(
            self,
            Stale::Hung | Stale::Isolated | Stale::Seen | Stale::Race
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Stale::Hung => "its postmaster hung and its daemon did not kill the backends first",
            Stale::Isolated => {
                "isolation = fence, and it could not reach that node since before it could promote"
            }
            Stale::Seen => {
                "it has seen the promoted node clearly for longer than the split-brain bound"
            }
            Stale::Race => "it is in sight of the promoted node (within the split-brain bound)",
            Stale::ByHand => "a promotion by hand",
            Stale::LedBlind => "it led while the promoted node was out of its sight",
            Stale::DaemonDown => "its daemon was down, paused or restarted",
            Stale::KeepServing => "isolation = keep-serving across a cut link",
            Stale::Loss => "probe loss",
            Stale::PeerDown => "the promoted node was down",
            Stale::Full => "a full server",
            Stale::OneWay => "a cut it could not notice (one-way, or begun after it could fence)",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at: Timestamp,
    pub what: String,
}

impl World {
    pub(crate) fn on_transition(&mut self, i: usize, t: Transition) {
        if let State::Promoting { .. } = t.to {
            self.nodes[i].promote_automatic = !matches!(t.reason, Reason::Operator { .. });
        }
        // What a node deciding to lead could know: the daemons in sight for a whole round.
        if t.to
            == (State::Starting {
                target: StartAs::Master,
            })
        {
            let cfg = &self.nodes[i].config;
            let window = cfg.connect_timeout_ms + cfg.probe_interval_ms + 2 * DELAY_MAX_MS + 1;
            let mut mask = 0;
            for j in 0..self.nodes.len() {
                if self.daemon_in_sight_since[i][j].is_some_and(|s| self.now.since(s) > window) {
                    mask |= 1 << j;
                }
            }
            self.nodes[i].lead_in_sight = mask;
        }
        if let State::Promoting { upstream } = t.to
            && !matches!(t.from, State::Promoting { .. })
        {
            self.stats.promotions += 1;
            let automatic = !matches!(t.reason, Reason::Operator { .. });
            let u = self.nodes[i].peer_of[upstream.index()];
            if automatic && let Some(since) = self.clean_since[i][u] {
                let cfg = &self.nodes[i].config;
                let window = cfg.connect_timeout_ms + cfg.probe_interval_ms + 2 * DELAY_MAX_MS + 1;
                if self.now.since(since) > window {
                    self.violation(format!(
                        "node {i} promoted while master {u} answered as healthy and reachable since {since}"
                    ));
                }
            }
        }
        // A node never leads on its own data, nor runs initdb, while a peer was an up master
        // in sight of it for the whole window in which a probe must have found it: alive but
        // unreadable (full) is not "no master".
        if matches!(
            t.reason,
            Reason::GraceExpired { .. } | Reason::NoMasterFound { .. }
        ) {
            let cfg = &self.nodes[i].config;
            let window = cfg.connect_timeout_ms + cfg.probe_interval_ms + 2 * DELAY_MAX_MS + 1;
            for j in 0..self.nodes.len() {
                if let Some(since) = self.clean_since[i][j]
                    && self.now.since(since) > window
                {
                    self.violation(format!(
                        "node {i} ended its wait for a master ({}) while node {j} was an up master in sight since {since}",
                        t.reason.code()
                    ));
                }
            }
        }
        // A node never declares its own postgres down while it was up for the whole window in
        // which the failed probes must have happened: a full server is alive.
        if let Reason::LocalDown { failures } = t.reason
            && let Some(since) = self.local_up_since[i]
        {
            let cfg = &self.nodes[i].config;
            let window = cfg.connect_timeout_ms + cfg.probe_interval_ms + 2 * DELAY_MAX_MS + 1;
            if self.now.since(since) > window {
                self.violation(format!(
                    "node {i} declared its postgres down (last {:?}) while it was up since {since}",
                    failures.last
                ));
            }
        }
        // A split-brain decision must rest on the node's true timeline, not a stale one.
        if let Reason::SplitBrain {
            local_timeline: Some(l),
            ..
        } = t.reason
            && let Some(d) = &self.nodes[i].pg.data
            && d.timeline != l
        {
            let truth = d.timeline;
            self.violation(format!(
                "node {i} decided split-brain on timeline {l}, but its data is on timeline {truth}"
            ));
        }
        if let (
            State::SteppingDown {
                then: pgha_core::AfterStop::Fence,
            },
            Reason::SplitBrain { peer, rule, .. },
        ) = (t.to, t.reason)
        {
            self.stats.split_brain_stops += 1;
            // The timeline rule keeps one master: it never stops both (both-stop does, by
            // design: an outage until an operator acts).
            let p = self.nodes[i].peer_index(peer);
            if rule == SplitBrainRule::OlderTimelineStepsDown {
                self.nodes[i].timeline_rule_fenced = true;
                if self.nodes[p].timeline_rule_fenced {
                    self.violation(format!(
                        "the split-brain rule {} stopped both node {i} and node {p}",
                        rule.name()
                    ));
                }
            }
        } else if !matches!(
            t.to,
            State::Fenced
                | State::SteppingDown {
                    then: pgha_core::AfterStop::Fence
                }
        ) {
            self.nodes[i].timeline_rule_fenced = false;
        }
        if let State::Cloning { .. } = t.to {
            self.stats.clones += 1;
        }
    }

    /// A write acknowledged by node `i` on `branch` now, after another node promoted off that
    /// branch, can never be on the promoted node's history: why it happened ([`Stale`]), with
    /// the promoted node and when it promoted. `None`: not such a write. The first matching
    /// cause decides, in this order: a promotion by hand, the writer's daemon down or paused,
    /// a hang its daemon watched long enough (`master_give_up + probe_interval + stop
    /// allowance`) before the promotion, a daemon (re)started within the takeover bound of it,
    /// isolation = fence and no way to reach the promoted node for `master_give_up` before it,
    /// a lead taken while the promoted node's daemon was out of sight, the promoted node gone,
    /// keep-serving across a cut, loss, a full server, another cut (one-way, or too recent to
    /// fence), else in sight both ways: within the split-brain bound of the latest of the
    /// promotion, the link clearing and the writer becoming master (a race), or beyond it.
    pub(crate) fn stale_write(&self, i: usize, branch: u32) -> Option<(Stale, usize, Timestamp)> {
        let now = self.now;
        let info = self.branches.iter().find(|b| {
            b.by != i
                && b.created < now
                && matches!(b.kind, BranchKind::Promotion { .. })
                && b.parent.is_some_and(|(p, _)| p == branch)
        })?;
        let (m, at) = (info.by, info.created);
        let verdict = |s: Stale| Some((s, m, at));
        if info.kind != (BranchKind::Promotion { automatic: true }) {
            return verdict(Stale::ByHand);
        }
        let node = &self.nodes[i];
        let cfg = &node.config;
        // Paused, or resumed too recently to have acted (a pause suspends the give-up and
        // isolation deadlines; after a resume they fire at once, and the stop takes its time).
        let just_resumed = node.resumed_pause_at.is_some_and(|r| {
            r.plus(cfg.stop_allowance_ms() + cfg.probe_interval_ms) >= now
                && r.plus(cfg.takeover_bound_ms()) >= at
        });
        if node.core.as_ref().is_none_or(|c| c.paused()) || just_resumed {
            return verdict(Stale::DaemonDown);
        }
        // A hang: the daemon that watched it must have killed the backends by `master_give_up
        // + probe_interval + stop allowance` after it began (the give-up inequality puts that
        // before the replica's takeover bound). A promotion sooner than that had another
        // cause (a partition, below).
        if let Some(h) = node.hung_at.filter(|&h| h >= node.master_since) {
            let watched = h.max(node.daemon_started);
            let killed_by = watched
                .plus(cfg.master_give_up_ms + cfg.probe_interval_ms + cfg.stop_allowance_ms());
            let hung_then = node.pg.hung || node.resumed_at.is_some_and(|r| r >= at);
            if hung_then && killed_by <= at {
                return verdict(Stale::Hung);
            }
        }
        if node.daemon_started.plus(cfg.takeover_bound_ms()) > at {
            // A daemon (re)started around the promotion does not know the peer (docs/core.md,
            // known limits).
            return verdict(Stale::DaemonDown);
        }
        let peer = node
            .peer_of
            .iter()
            .position(|&n| n == m)
            .map(|k| PeerId(k as u8));
        if peer.is_some_and(|p| {
            node.core
                .as_ref()
                .is_some_and(|c| c.peer_heard(p).is_none())
        }) {
            // Nor does one that never heard from it since it started (docs/core.md, known
            // limits: a lone node may lead on its data).
            return verdict(Stale::DaemonDown);
        }
        if cfg.isolation == Isolation::Fence
            && self.cut_since[i][m].is_some_and(|t| t.plus(cfg.master_give_up_ms) <= at)
        {
            // A cut hid that the promoted node had become a replica (it was last seen as a
            // master: a one-way cut while it re-cloned): fence mode watches only peers known
            // to be able to promote (docs/core.md, known limits).
            if peer.is_some_and(|p| node.core.as_ref().is_some_and(|c| !c.peer_could_promote(p))) {
                return verdict(Stale::OneWay);
            }
            return verdict(Stale::Isolated);
        }
        if node.master_since > at && node.lead_in_sight & (1 << m) == 0 {
            return verdict(Stale::LedBlind);
        }
        let bound = self.split_brain_bound();
        let recent = |t: Option<Timestamp>| t.is_some_and(|t| now.since(t) <= bound);
        if recent(self.gone_at[m]) {
            return verdict(Stale::PeerDown);
        }
        if cfg.isolation == Isolation::KeepServing && recent(self.murky_at[i][m]) {
            return verdict(Stale::KeepServing);
        }
        if recent(self.lossy_at) {
            return verdict(Stale::Loss);
        }
        if recent(self.full_at[i]) || recent(self.full_at[m]) {
            return verdict(Stale::Full);
        }
        if recent(self.murky_at[i][m]) {
            return verdict(Stale::OneWay);
        }
        // In sight both ways: the split-brain rule must stop it within its bound of the
        // latest of the promotion, the link clearing, and its own start as master.
        let since = at
            .max(self.murky_at[i][m].unwrap_or(Timestamp::ZERO))
            .max(node.master_since);
        if now.since(since) > bound {
            return verdict(Stale::Seen);
        }
        verdict(Stale::Race)
    }

    /// After the run, with `m` the one master: every write acknowledged to the client is on
    /// its history, except the writes asynchronous replication loses at a failover (acknowledged
    /// before the promotion that left them behind, not yet shipped), writes conceded when they
    /// were acknowledged (see `World::stale_write`), and writes an operator discarded (a
    /// forced re-clone, a promotion by hand) or a node that led while the writer was out of its
    /// sight left behind. Anything else missing is a violation: counted as "offline" when a
    /// data dir or a set-aside copy still holds it, "gone" otherwise.
    pub fn check_writes(&mut self, m: usize) {
        let Some(fin) = self.nodes[m].pg.data.clone() else {
            return;
        };
        let mut chain = fin.ancestry.clone();
        chain.push((fin.branch, fin.lsn));
        let on_chain = |b: u32| chain.iter().position(|&(x, _)| x == b);
        let all_others = |by: usize| ((1u32 << self.nodes.len()) - 1) & !(1 << by);
        let mut failures: Vec<String> = Vec::new();
        let (mut offline, mut gone) = (0, 0);
        for w in &self.writes {
            let k = on_chain(w.branch);
            let kept = k.map_or(0, |k| chain[k].1.min(w.to).saturating_sub(w.from));
            let lost = (w.to - w.from).saturating_sub(kept);
            if lost == 0 {
                continue;
            }
            let first = w.from + kept + 1;
            if w.stale.is_some_and(|s| !s.is_violation()) {
                self.stats.writes_conceded += lost;
                continue;
            }
            if self
                .set_aside
                .iter()
                .any(|(d, forced)| *forced && holds(d, w.branch, first))
            {
                self.stats.writes_operator += lost;
                continue;
            }
            // Which branch left these writes behind, and how it began.
            let left_by = match k {
                Some(k) => match chain.get(k + 1) {
                    Some(&(c, _)) => Some(self.branches[c as usize]),
                    // The final master is on this branch behind them: it has not written yet
                    // since it led on that data.
                    None => Some(Branch {
                        parent: Some((w.branch, chain[k].1)),
                        created: self.now,
                        by: m,
                        kind: BranchKind::Diverged {
                            in_sight: self.nodes[m].lead_in_sight,
                        },
                        tip: 0,
                    }),
                },
                None => None,
            };
            let verdict: Result<bool, String> = match left_by {
                _ if let Some(why) = w.stale => Err(format!(
                    "acknowledged after a promotion off their branch: {}",
                    why.describe()
                )),
                Some(c) => match c.kind {
                    BranchKind::Promotion { .. } if w.until <= c.created => Ok(true),
                    BranchKind::Promotion { .. } => Err(format!(
                        "acknowledged by node {} after node {} promoted at {}",
                        w.node, c.by, c.created
                    )),
                    BranchKind::Diverged { in_sight } if in_sight & (1 << w.node) == 0 => Ok(false),
                    _ => Err(format!(
                        "node {} led at {} on data behind node {}'s, whose daemon was in sight",
                        c.by, c.created, w.node
                    )),
                },
                None => {
                    // A side branch lost: the first branch of its line off the final history.
                    let mut b = w.branch;
                    let side = loop {
                        match self.branches[b as usize].parent {
                            Some((a, _)) if on_chain(a).is_none() => b = a,
                            Some(_) => break Some(b),
                            None => break None,
                        }
                    };
                    match side.map(|b| (b, self.branches[b as usize])) {
                        None => Err("on a history unrelated to the final master's".to_string()),
                        Some((_, s)) if s.kind == (BranchKind::Promotion { automatic: false }) => {
                            Ok(false)
                        }
                        Some((_, s)) if matches!(s.kind, BranchKind::Diverged { in_sight } if in_sight != all_others(s.by)) => {
                            Ok(false)
                        }
                        Some((b, s)) => Err(format!(
                            "on branch {b} that node {} started at {} ({:?}), which the final history left behind",
                            s.by, s.created, s.kind
                        )),
                    }
                }
            };
            match verdict {
                Ok(true) => self.stats.writes_unshipped += lost,
                Ok(false) => self.stats.writes_operator += lost,
                Err(why) => {
                    let held = self
                        .nodes
                        .iter()
                        .filter_map(|n| n.pg.data.as_ref())
                        .chain(self.set_aside.iter().map(|(d, _)| d))
                        .any(|d| holds(d, w.branch, first));
                    if held {
                        offline += lost;
                    } else {
                        gone += lost;
                    }
                    if failures.len() < 4 {
                        failures.push(format!(
                            "{lost} writes of node {} on branch {} ({}..={}, at {}..{}): {why}",
                            w.node, w.branch, first, w.to, w.at, w.until
                        ));
                    }
                }
            }
        }
        if !failures.is_empty() {
            self.violation(format!(
                "acknowledged writes missing from master {m}'s history ({offline} offline, {gone} gone): {}",
                failures.join("; ")
            ));
        }
    }

    pub(crate) fn master_up(&self, i: usize) -> bool {
        self.nodes[i].pg.up_master()
    }

    pub(crate) fn check_invariants(&mut self) {
        let n = self.nodes.len();
        let now = self.now;
        if self.loss.is_some() {
            self.lossy_at = Some(now);
        }
        for i in 0..n {
            if self.nodes[i].pg.exhausted {
                self.full_at[i] = Some(now);
            }
            if self.nodes[i].daemon_down && !self.master_up(i) {
                self.gone_at[i] = Some(now);
            }
            let up = !self.nodes[i].pg.hung
                && self.nodes[i].pg.run.is_some_and(|r| r.phase == Phase::Up);
            self.local_up_since[i] = if up {
                self.local_up_since[i].or(Some(now))
            } else {
                None
            };
            // Timelines only grow: a node never runs as master on a timeline older than one it
            // has followed since its last clone.
            if self.master_up(i)
                && let Some(d) = &self.nodes[i].pg.data
                && d.timeline < self.nodes[i].followed_timeline
                && self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.state() == State::Master)
            {
                let (tl, followed) = (d.timeline, self.nodes[i].followed_timeline);
                self.violation(format!(
                    "node {i} is master on timeline {tl} after following timeline {followed}"
                ));
            }
        }
        // Per pair, from what is cut, up and full now.
        let mut cut = [[false; MAX_NODES]; MAX_NODES];
        for &(a, b) in &self.partitioned {
            cut[a][b] = true;
            cut[b][a] = true;
        }
        for &(a, b) in &self.one_way {
            cut[a][b] = true;
        }
        let loss = self.loss.is_some();
        let mut master_up = [false; MAX_NODES];
        for (j, up) in master_up.iter_mut().enumerate().take(n) {
            *up = self.master_up(j);
        }
        let since = |s: Option<Timestamp>, on: bool| if on { s.or(Some(now)) } else { None };
        for (i, row) in cut.iter().enumerate().take(n) {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let reach = !row[j] && !loss;
                self.clean_since[i][j] = since(self.clean_since[i][j], master_up[j] && reach);
                self.daemon_in_sight_since[i][j] = since(
                    self.daemon_in_sight_since[i][j],
                    !self.nodes[j].daemon_down && reach,
                );
                self.cut_since[i][j] = since(self.cut_since[i][j], row[j]);
                if row[j]
                    || cut[j][i]
                    || loss
                    || self.nodes[i].pg.exhausted
                    || self.nodes[j].pg.exhausted
                {
                    self.murky_at[i][j] = Some(now);
                }
            }
        }
        for a in 0..n {
            for b in (a + 1)..n {
                // A full server cannot tell its peer its role: like a partition, it is out
                // of sight for the split-brain check (docs/simulator.md).
                let see = !self.link_down(a, b)
                    && self.loss.is_none()
                    && !self.nodes[a].pg.exhausted
                    && !self.nodes[b].pg.exhausted;
                let acting =
                    |w: &World, x: usize| w.nodes[x].core.as_ref().is_some_and(|c| !c.paused());
                let both = see
                    && self.master_up(a)
                    && self.master_up(b)
                    && acting(self, a)
                    && acting(self, b);
                self.both_master_since[a][b] = if both {
                    self.both_master_since[a][b].or(Some(now))
                } else {
                    None
                };
                let bound = self.split_brain_bound();
                if let Some(since) = self.both_master_since[a][b]
                    && now.since(since) > bound
                {
                    self.violation(format!(
                        "nodes {a} and {b} both master and in sight of each other for {} ms (bound {bound} ms)",
                        now.since(since)
                    ));
                }
                // A dead daemon cannot release its VIP (the new master's gratuitous ARP takes
                // the traffic); the daemon releases it when it starts again.
                let vips = see
                    && self.nodes[a].vip
                    && self.nodes[b].vip
                    && acting(self, a)
                    && acting(self, b);
                self.vip_both_since[a][b] = if vips {
                    self.vip_both_since[a][b].or(Some(now))
                } else {
                    None
                };
                // A hung master keeps its VIP until its own daemon sees the local postgres
                // fail (psql_error_count probes), which no peer can speed up.
                let c = &self.nodes[0].config;
                let vip_bound = bound
                    + u64::from(c.psql_error_count) * (c.connect_timeout_ms + c.probe_interval_ms);
                if let Some(since) = self.vip_both_since[a][b]
                    && now.since(since) > vip_bound
                {
                    self.violation(format!(
                        "nodes {a} and {b} both hold the VIP in sight of each other"
                    ));
                }
            }
        }
    }

    /// How long two masters in sight of each other may both accept writes: a local probe to
    /// see its own role, a peer probe and its answer, the stop.
    pub fn split_brain_bound(&self) -> u64 {
        let c = &self.nodes[0].config;
        2 * c.probe_interval_ms + c.connect_timeout_ms + 2 * DELAY_MAX_MS + STOP_MAX_MS + 500
    }
}
