"""Who may publish and subscribe what on the bus: NATS users and their permissions.

Derived from the bus contract (:data:`tally.contract.CHANNELS`: who publishes and who
consumes each subject), so the server's permissions cannot drift from the code:
``tally nats config`` writes the NATS server configuration, ``deploy/nats/nats-server.conf``
holds the committed copy (a test compares the two). Every service and client role is one
user whose password the server reads from the environment
(``TALLY_NATS_PASSWORD_<ROLE>``, written to ``.env`` by ``tally secrets init``), so the
committed file holds no secret.

Example:
    >>> p = permissions("agent")
    >>> "run.recorded" in p.publish, "task.created" in p.publish
    (False, True)
"""

from __future__ import annotations

from dataclasses import dataclass

from tally import subjects as S
from tally.bus import DLQ_BODIES
from tally.contract import AGENTS, CHANNELS
from tally.lease import bucket_name
from tally.subjects import Catalog

SERVICES = ("estimator", "assigner", "quota", "tracker", "learner", "reporter")
#: Client roles: agents (the SDK, or any NATS client following the AsyncAPI document)
#: and operators (the ``tally`` CLI, dashboards).
AGENT = "agent"
OPERATOR = "operator"
ROLES = (*SERVICES, AGENT, OPERATOR)

#: Names a channel's publishers or consumers list for each client role.
_CLIENT_NAMES = {AGENT: {AGENTS, "sdk"}, OPERATOR: {"cli", "dashboards"}}

#: The JetStream API, for services and operators: streams and consumers, pulls, info.
JS_API = "$JS.API.>"
#: Acknowledgements of JetStream messages and replies to flow-control messages.
JS_ACK = "$JS.ACK.>"
JS_FC = "$JS.FC.>"
#: What a service may never do to a stream through the API: delete, purge or erase it.
JS_DESTRUCTIVE = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
)


def password_variable(role: str) -> str:
    """The environment variable holding ``role``'s password, for the server and the role."""
    return f"TALLY_NATS_PASSWORD_{role.upper()}"


def inbox(role: str) -> str:
    """The reply-inbox prefix of ``role``'s connections (see ``TallySettings.nats_options``).

    A user reads only its own inbox: no one else's replies and JetStream deliveries.
    """
    return f"_INBOX_{role}"


@dataclass(frozen=True)
class Permissions:
    """What one user may publish and subscribe to (full subjects)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()
    #: May answer requests (publish once to the requester's reply inbox).
    allow_responses: bool = False


def _uses(names: tuple[str, ...], role: str) -> bool:
    return role in names or bool(_CLIENT_NAMES.get(role, set()) & set(names))


def _dedupe(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def permissions(role: str, catalog: Catalog | None = None) -> Permissions:
    """The permissions of one role under ``catalog``'s namespace.

    Raises:
        KeyError: ``role`` is not one of :data:`ROLES`.
    """
    if role not in ROLES:
        raise KeyError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    cat = catalog or Catalog()
    dlq = f"{S.DLQ_PREFIX}.{{service}}"
    pub = [
        cat.subject(c.subject) for c in CHANNELS if c.subject != dlq and _uses(c.publishers, role)
    ]
    sub = [
        cat.subject(c.subject) for c in CHANNELS if c.subject != dlq and _uses(c.consumers, role)
    ]
    answers = any(c.kind == "request" and role in c.consumers for c in CHANNELS)
    if role == AGENT:
        # Publishes its events and requests; reads its answers. No JetStream API: an
        # agent can neither read streams nor create consumers, only publish into them.
        return Permissions(
            _dedupe(pub),
            _dedupe([*sub, f"{inbox(role)}.>"]),
            deny_publish=(cat.subject(S.RUN_RECORDED),),
        )
    bodies = f"$O.{cat.stream(DLQ_BODIES)}.>"
    #: Leases of replicas that work one at a time (tally/lease.py): KV writes.
    leases = f"$KV.{bucket_name(cat)}.>"
    if role == OPERATOR:
        # Replays dead letters to the subject they failed on: any streamed event a
        # service consumes, except the tracker's own run.recorded.
        replayable = [
            cat.subject(c.subject)
            for c in CHANNELS
            if c.kind == "event" and c.subject not in (S.RUN_RECORDED, dlq)
            if set(c.consumers) & set(SERVICES)
        ]
        return Permissions(
            _dedupe([*pub, *replayable, JS_API, JS_ACK, JS_FC, bodies, leases]),
            _dedupe([*sub, cat.subject(f"{S.DLQ_PREFIX}.>"), cat.metrics(">"), f"{inbox(role)}.>"]),
            deny_publish=(cat.subject(S.RUN_RECORDED),),
        )
    pub += [cat.dlq(role), JS_API, JS_ACK, JS_FC, bodies, leases]
    if role == "reporter":
        pub.append(cat.metrics(">"))
        sub.append(cat.metrics(">"))
    deny = list(JS_DESTRUCTIVE)
    if role != "tracker":
        deny.append(cat.subject(S.RUN_RECORDED))
    return Permissions(
        _dedupe(pub), _dedupe([*sub, f"{inbox(role)}.>"]), tuple(deny), allow_responses=answers
    )


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def server_config(namespace: str = "", *, auth_only: bool = False) -> str:
    """The NATS server configuration: JetStream on, one user per role, no anonymous access.

    Passwords are environment references (``$TALLY_NATS_PASSWORD_TRACKER``): the server
    refuses to start when one is missing. With ``auth_only`` it is the ``authorization``
    block alone, for a configuration that sets JetStream and clustering itself and
    includes this one (``deploy/nats/cluster/``, the NATS Helm chart's values).
    """
    catalog = Catalog(namespace)
    command = "tally nats config --auth-only" if auth_only else "tally nats config"
    lines = [
        "# Tally's NATS users: one per service and client role."
        if auth_only
        else "# Tally's NATS server: JetStream, one user per service and client role.",
        f"# Generated by `{command}` from the bus contract (libs/tally/contract.py);",
        "# do not edit by hand. Passwords come from the environment (`tally secrets init`).",
        *([f"# Namespace: {namespace}"] if namespace else []),
        "",
        *([] if auth_only else ["jetstream: enabled", ""]),
        "authorization {",
    ]
    for role in ROLES:
        p = permissions(role, catalog)
        publish = f"allow: {_list(p.publish)}"
        if p.deny_publish:
            publish += f", deny: {_list(p.deny_publish)}"
        lines += [
            f"  {role.upper()} = {{",
            f"    publish: {{{publish}}}",
            f"    subscribe: {{allow: {_list(p.subscribe)}}}",
            *(["    allow_responses: true"] if p.allow_responses else []),
            "  }",
        ]
    lines.append("  users: [")
    for role in ROLES:
        lines.append(
            f"    {{user: {role}, password: ${password_variable(role)}, "
            f"permissions: ${role.upper()}}}"
        )
    lines += ["  ]", "}", ""]
    return "\n".join(lines)
