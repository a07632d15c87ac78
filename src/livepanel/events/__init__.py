"""Typed events: the envelope, the registry of payload types, validation and redaction.

A payload type is a dataclass registered under an event type name with
:func:`event_type`. Its fields are snake_case in Python and camelCase on the
wire. Publishing validates the payload against the dataclass, turns it into its
wire form, redacts secret-looking values and cuts long command output, so what
reaches a client is always well-formed and safe to show.

One module per job: :mod:`~livepanel.events.envelope` (:class:`Event`, the
wire's timestamps, audiences), :mod:`~livepanel.events.registry`
(:func:`event_type`, the state rules, :func:`prepare_payload`),
:mod:`~livepanel.events.validation` and :mod:`~livepanel.events.redaction`;
this package re-exports their public names.

The built-in types of an agent admin panel (``SessionCreated``,
``SessionKilled``, ``AgentStatus``, ``CronExecuted``, ``GatewayStatus``) are
opt-in: they live in :mod:`livepanel.events.builtin`, and importing one of them
from here imports that module, which registers all five. Importing
``livepanel`` or ``livepanel.events`` registers none.

Example::

    from livepanel.events import SessionCreated  # registers the five built-in types

    broadcast_event(SessionCreated(session_key="s1", agent_id="a1", kind="direct"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livepanel.events.envelope import Event, audience_of, format_timestamp, parse_timestamp
from livepanel.events.redaction import (
    REDACTED,
    SECRET_KEY_WORDS,
    SECRET_PATTERNS,
    STREAM_OUTPUT_LIMIT,
    add_secret_pattern,
)
from livepanel.events.registry import _REGISTRY as _REGISTRY  # the test suites' snapshots
from livepanel.events.registry import _STATE_RULES as _STATE_RULES
from livepanel.events.registry import (
    RESERVED_TYPES,
    StateRule,
    event_type,
    prepare_payload,
    registered_types,
    state_rule_of,
    state_rules,
)
from livepanel.events.validation import NonNegative

if TYPE_CHECKING:  # what __getattr__ below gives, for type checkers
    from livepanel.events.builtin import AgentStatus as AgentStatus
    from livepanel.events.builtin import CronExecuted as CronExecuted
    from livepanel.events.builtin import GatewayStatus as GatewayStatus
    from livepanel.events.builtin import SessionCreated as SessionCreated
    from livepanel.events.builtin import SessionKilled as SessionKilled

__all__ = [
    "REDACTED",
    "RESERVED_TYPES",
    "SECRET_KEY_WORDS",
    "SECRET_PATTERNS",
    "STREAM_OUTPUT_LIMIT",
    "Event",
    "NonNegative",
    "StateRule",
    "add_secret_pattern",
    "audience_of",
    "event_type",
    "format_timestamp",
    "parse_timestamp",
    "prepare_payload",
    "registered_types",
    "state_rule_of",
    "state_rules",
]

_BUILTIN = frozenset(
    {"AgentStatus", "CronExecuted", "GatewayStatus", "SessionCreated", "SessionKilled"}
)


def __getattr__(name: str) -> Any:
    """The built-in types, imported (and so registered) on first use."""
    if name in _BUILTIN:
        import livepanel.events.builtin as builtin  # opt-in: only when asked for

        return getattr(builtin, name)
    raise AttributeError(f"module 'livepanel.events' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_BUILTIN})
