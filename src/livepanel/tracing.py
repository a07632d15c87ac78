"""OpenTelemetry (extra ``livepanel[otel]``): from the request that published to every fan-out.

:func:`instrument` makes ``publish``/``apublish`` run a short ``publish <type>``
span (a child of whatever span is current, say the HTTP request's) and record
its context with the event, in W3C ``traceparent`` form. The context travels
with the event through the backend (the Redis entry holds it) and never on the
wire to clients. Each process that fans the event out runs a ``deliver
<type>`` span linked to the publish span, from the fan-out to the hand-over of
the frames to the server, so a trace shows the request that published an event
and its delivery on every worker.

Nothing is recorded while no OpenTelemetry SDK is configured (the API's
default tracer records nothing), and livepanel runs without the package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "livepanel.tracing needs opentelemetry-api: pip install 'livepanel[otel]'"
    ) from exc

from livepanel.__about__ import __version__
from livepanel.events import Event
from livepanel.observer import Observer

if TYPE_CHECKING:
    from livepanel.broadcaster import Broadcaster

__all__ = ["instrument"]


class _Tracing(Observer):
    """What :func:`instrument` makes a broadcaster observe: its publishes and fan-outs."""

    def __init__(self, broadcaster: Broadcaster, tracer: trace.Tracer) -> None:
        self.broadcaster = broadcaster
        self.tracer = tracer

    def published(self, event: Event) -> Event:
        """Run the publish span and record its context with ``event``."""
        with self.tracer.start_as_current_span(
            f"publish {event.type}",
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "livepanel", "livepanel.event_type": event.type},
        ) as span:
            if not span.get_span_context().is_valid:
                return event
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        # the event is the broadcaster's own fresh copy, not yet shared with anyone
        object.__setattr__(event, "trace", carrier)
        return event

    def fanned_out(self, events: Sequence[Event]) -> None:
        """Open a delivery span per traced event; close them after the write pass."""
        spans = []
        empty = otel_context.Context()  # a delivery starts a trace of its own, linked
        connections = self.broadcaster.connection_count
        for event in events:
            if not event.trace:
                continue
            linked = trace.get_current_span(propagate.extract(event.trace)).get_span_context()
            if not linked.is_valid:
                continue
            spans.append(
                self.tracer.start_span(
                    f"deliver {event.type}",
                    context=empty,
                    kind=trace.SpanKind.CONSUMER,
                    links=[trace.Link(linked)],
                    attributes={
                        "messaging.system": "livepanel",
                        "livepanel.event_type": event.type,
                        "livepanel.connections": connections,
                    },
                )
            )
        if spans:
            try:
                asyncio.get_running_loop().call_soon(_end, spans)
            except RuntimeError:
                _end(spans)


def _end(spans: list[Any]) -> None:
    for span in spans:
        span.end()


def instrument(broadcaster: Broadcaster, tracer_provider: Any = None) -> None:
    """Trace ``broadcaster``'s events from publish to delivery with OpenTelemetry.

    Args:
        broadcaster: the broadcaster to instrument, in every process (the
            publishing ones record the context, the delivering ones link to it).
        tracer_provider: an OpenTelemetry ``TracerProvider``; the global one
            (``opentelemetry.trace.set_tracer_provider``) when ``None``.

    Example::

        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from livepanel.tracing import instrument

        trace.set_tracer_provider(TracerProvider())  # and an exporter of yours
        instrument(broadcaster)
    """
    tracer = trace.get_tracer("livepanel", __version__, tracer_provider=tracer_provider)
    broadcaster.observe(_Tracing(broadcaster, tracer))
