"""The records one cluster round passes from step to step (DESIGN.md section 3):

    observe(io) -> Snapshot -> assess(previous, snapshot) -> Assessment
        -> plan(assessment) -> [Action]          (the leader)
        -> decide_local(assessment, local) -> LocalStep   (every node)
        -> act(...) -> [Outcome]                 (read by the next assess)

All frozen, all plain data: the pure steps are tested with them directly."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mgmtd.cluster.etcdapi import EndpointStatus, MemberInfo
from mgmtd.cluster.keys import IdealSize

# --- what etcd and the KV store say (observe) ------------------------------------


@dataclass(frozen=True)
class Volunteer:
    """A live node offering to run etcd (``{ns}/volunteers/{host}``, on a lease)."""

    host: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


@dataclass(frozen=True)
class Nomination:
    """``{ns}/nominated/{host}``, written by the leader when it adds the learner
    (and by the bootstrapping node for itself)."""

    host: str
    peer_urls: tuple[str, ...]
    since: float
    initial_cluster: str = ""


class Readable(enum.Enum):
    """A key that is there but cannot be read is not the same as no key."""

    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Snapshot:
    """Raw facts of one round; no decision is made while gathering them."""

    now: float
    self_host: str
    reachable: bool = True
    error: str = ""                   # why the cluster could not be read ("" when it could)
    permission_denied: bool = False   # etcd knows no user for this node yet
    endpoint: str = ""                # the endpoint that answered the member list
    members: tuple[MemberInfo, ...] = ()
    # probes of ``members`` (same order); None when this round did not probe (only
    # the leader, and a node that cannot reach the cluster, probe)
    statuses: tuple[EndpointStatus | None, ...] | None = None
    leader: str = ""                  # holder of ``{ns}/cluster/leader``
    nomination: Nomination | Readable | None = None   # this node's own
    ideal: IdealSize | None = None
    volunteers: tuple[Volunteer, ...] = ()
    nominations: tuple[Nomination, ...] = ()


# --- what the round makes of it (assess) ---------------------------------------------


@dataclass(frozen=True)
class Member:
    """One entry of etcd's member list, with the leader's latest probe of it."""

    id: int
    name: str  # == mgmtd hostname; "" while an added member has not started yet
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool
    healthy: bool
    unhealthy_since: float | None  # first probe that failed; None while healthy
    caught_up: bool  # learners: raft index close enough to the leader's to promote
    progress: float = 0.0  # learners: their raft index as a share of the leader's


@dataclass(frozen=True)
class Quorum:
    """What the probes found of the voters."""

    voters: int
    healthy: int      # answer and know a raft leader
    reachable: int    # answer at all

    @property
    def ok(self) -> bool:
        return has_majority(self.healthy, self.voters)

    def describe(self) -> str:
        return f"{self.reachable} of {self.voters} voters reachable, {self.healthy} with a leader"


def has_majority(healthy: int, voter_count: int) -> bool:
    return voter_count >= 1 and 2 * healthy > voter_count


@dataclass(frozen=True)
class Assessment:
    """Everything a round decides from. The first nine fields are what the
    planner reads; the rest is for this node's own step and for reports."""

    now: float
    self_host: str
    ideal_size: int | None  # the last valid size; None: none seen, so no membership change
    members: tuple[Member, ...]
    volunteers: tuple[Volunteer, ...]
    nominations: tuple[Nomination, ...]
    failed_hosts: frozenset[str]  # recently removed for missing a deadline or being dead
    grace_period: float  # how long a voter may stay unhealthy before removal
    learner_deadline: float  # how long a nominee has to start and catch up
    reachable: bool = True
    error: str = ""
    permission_denied: bool = False
    endpoint: str = ""
    leader: str = ""
    is_leader: bool = False
    quorum: Quorum | None = None       # None: not probed this round
    ideal_problem: str = ""            # what is wrong with the ideal-size key
    nomination: Nomination | None = None   # this node's (the last readable one)
    nomination_unreadable: bool = False
    failures: tuple[tuple[str, float], ...] = ()   # (host, when) behind ``failed_hosts``
    raft_leader_url: str = ""          # where membership changes go ("" when unknown)

    @property
    def voters(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.is_learner)

    @property
    def voter_endpoints(self) -> tuple[str, ...]:
        return tuple(u for m in self.voters if m.name for u in m.client_urls)

    @property
    def member_names(self) -> frozenset[str]:
        return frozenset(m.name for m in self.members if m.name)

    @property
    def below_ideal(self) -> bool:
        return self.ideal_size is not None and len(self.voters) < self.ideal_size

    @property
    def quorum_lost(self) -> str:
        """Plainly, when the probes show no majority ("" otherwise or unprobed)."""
        return self.quorum.describe() if self.quorum is not None and not self.quorum.ok else ""


# --- what acting did (read by the next assess) -----------------------------------------


class RemovalCause(enum.Enum):
    """Why the planner removes a member: a host removed for failing is tried
    after the other volunteers for a while."""

    DEAD = "unhealthy past grace period"
    LEARNER_DEADLINE = "learner did not start and catch up before its deadline"
    NO_NOMINATION = "learner has no nomination"
    VOLUNTEER_GONE = "learner's volunteer is gone"
    NOT_NEEDED = "learner no longer needed: voters already at ideal size"
    EXTRA_LEARNER = "only one learner at a time"
    ABOVE_IDEAL = "above ideal size"

    @property
    def failed(self) -> bool:
        return self in (RemovalCause.DEAD, RemovalCause.LEARNER_DEADLINE)


# --- what the leader decides (plan) ------------------------------------------------------


@dataclass(frozen=True)
class AddLearner:
    """Add ``host`` as a learner; acting also writes its nomination."""

    host: str
    peer_urls: tuple[str, ...]


@dataclass(frozen=True)
class Promote:
    member_id: int
    host: str


@dataclass(frozen=True)
class RemoveMember:
    """Remove a member; acting also deletes the host's nomination."""

    member_id: int
    host: str  # "" when a never-started learner cannot be traced to a host
    cause: RemovalCause

    @property
    def reason(self) -> str:
        return self.cause.value


@dataclass(frozen=True)
class Unnominate:
    host: str
    reason: str


@dataclass(frozen=True)
class Wait:
    """Something needs doing but cannot be done safely yet."""

    reason: str


@dataclass(frozen=True)
class LostQuorum:
    """Fewer than a majority of voters are healthy: report, change nothing."""

    healthy: int
    voters: int


MembershipChange = AddLearner | Promote | RemoveMember
Action = AddLearner | Promote | RemoveMember | Unnominate | Wait | LostQuorum


def is_membership_change(action: Action) -> bool:
    return isinstance(action, MembershipChange)


# --- what acting did (read by the next assess) -----------------------------------------


class Result(enum.Enum):
    DONE = "done"
    NOT_YET = "not yet"      # etcd said "not now" (strict reconfig, learner not in sync...)
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """What became of one action."""

    action: Action
    result: Result
    detail: str = ""

    @property
    def changed_membership(self) -> bool:
        return self.result is Result.DONE and is_membership_change(self.action)


@dataclass(frozen=True)
class Decision:
    """The leader's plan for one round and what became of it, as published for
    ``mgmtctl status``."""

    actions: tuple[Action, ...] = ()
    outcomes: tuple[Outcome, ...] = field(default=())

    @property
    def waiting(self) -> str:
        return "; ".join(a.reason for a in self.actions if isinstance(a, Wait))

    @property
    def changed_membership(self) -> bool:
        return any(o.changed_membership for o in self.outcomes)

    @property
    def change_pending(self) -> bool:
        """A change etcd has not allowed yet: look again soon."""
        return any(is_membership_change(a) for a in self.actions)
