"""Prometheus metrics (extra ``livepanel[metrics]``): what an operator's Prometheus reads.

:func:`instrument` registers one collector that reads livepanel's own counters
when Prometheus scrapes, so counting costs the hot path nothing beyond what
``Broadcaster.stats()`` already counts. The one observation on the hot path is
``livepanel_delivery_seconds``: once per broadcast event, after the fan-out's
write pass, never once per client.

Every metric is prefixed ``livepanel_``. Labels take a handful of fixed values
(``transport``, ``status``, ``outcome``) and never an id, a key, a user or a
payload value. With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker
processes behind one ``/metrics``), the same numbers are copied into
multi-process metrics once a second instead, and every live worker forgets the
live gauges of workers that died (:func:`forget_dead_workers`), so the totals
add up on a server without a ``child_exit`` hook; see docs/operating.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeHistogramMetricFamily,
        GaugeMetricFamily,
        Metric,
    )
    from prometheus_client.multiprocess import mark_process_dead as _untyped_mark_process_dead
    from prometheus_client.registry import Collector
    from prometheus_client.utils import floatToGoString as _untyped_go_string
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "livepanel.metrics needs prometheus_client: pip install 'livepanel[metrics]'"
    ) from exc

from livepanel.asgi import LivePanelApp, LivePanelMiddleware, endpoint_of
from livepanel.backends.base import reader_status_of
from livepanel.events import Event
from livepanel.lag import LagSummary
from livepanel.observer import Observer

if TYPE_CHECKING:
    from livepanel.broadcaster import Broadcaster

__all__ = [
    "DELIVERY_BUCKETS",
    "LAG_EVENT_BUCKETS",
    "LAG_SECOND_BUCKETS",
    "LivePanelCollector",
    "forget_dead_workers",
    "instrument",
]

DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Buckets of ``livepanel_delivery_seconds``: a millisecond to ten seconds."""
LAG_SECOND_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Buckets of ``livepanel_connection_lag_seconds``: a tenth of a second to five minutes."""
LAG_EVENT_BUCKETS = (0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 10000.0)
"""Buckets of ``livepanel_connection_lag_events``: up to date, then one to ten thousand."""

_COUNTERS = (
    # (metric name without _total, stats() key, help)
    ("events_published", "published", "Events this process published."),
    ("events_delivered", "delivered", "Events handed to the server for a client, per client."),
    ("events_dropped", "dropped", 'Events dropped for a slow client (slow_consumer="drop").'),
    ("slow_disconnects", "slow_disconnects", "Connections closed with 1013: too slow."),
)
_HELP_CONNECTIONS = "Live connections of this process, by transport."
_HELP_HANDSHAKES = "WebSocket handshakes answered, by HTTP status (101: accepted)."
_HELP_FALLBACKS = "Event streams accepted as a fallback from failed WebSocket handshakes."
_HELP_REPLAYS = "Resumes with since, by outcome: granted or unavailable (refetch)."
_HELP_LAG = "How far this process's reader trails the stream, in seconds."
_HELP_DELIVERY = "Seconds from publish to hand-over to the server (once per broadcast)."
_HELP_LAG_SECONDS = "How long each acking connection has been behind what it was sent, now."
_HELP_LAG_EVENTS = "Events sent to each acking connection after the one it last acknowledged."
_LAG_REFRESH = 1.0  # seconds a measured lag is reused for
_SYNC_INTERVAL = 1.0  # multi-process mode: seconds between two copies
_mark_process_dead: Callable[[int, str], None] = _untyped_mark_process_dead  # it has no hints
floatToGoString: Callable[[float], str] = _untyped_go_string  # a bucket's le, as Prometheus'
# prometheus_client's file per process and live gauge mode: gauge_livesum_1234.db
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


class LivePanelCollector(Collector):
    """Reads a broadcaster's (and optionally an app's) counters at scrape time.

    Made and registered by :func:`instrument`; ``collect()`` is what
    ``prometheus_client`` calls on each scrape.

    Example::

        collector = instrument(broadcaster, app)
        REGISTRY.unregister(collector)  # stop exporting, e.g. in a test
    """

    def __init__(
        self,
        broadcaster: Broadcaster,
        app: LivePanelApp | LivePanelMiddleware | None = None,
        histogram: Histogram | None = None,
    ) -> None:
        self.broadcaster = broadcaster
        self.app = None if app is None else endpoint_of(app)
        self.histogram = histogram
        self._lag = 0.0
        self._lag_at = -_LAG_REFRESH
        self._refreshing: Any = None

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (read once at registration)."""
        return self._families({}, {}, {}, 0.0, 0, None, samples=False)

    def collect(self) -> Iterable[Metric]:
        """The metric families with their current values."""
        stats = self.broadcaster.stats()
        handshakes = dict(self.app.handshakes) if self.app is not None else {}
        replays = dict(self.broadcaster.replays)
        fallbacks = self.app.sse_fallbacks if self.app is not None else 0
        acks = self.broadcaster.lag()
        return self._families(stats, handshakes, replays, self.backend_lag(), fallbacks, acks)

    def _families(
        self,
        stats: dict[str, Any],
        handshakes: dict[int, int],
        replays: dict[str, int],
        lag: float,
        fallbacks: int,
        acks: LagSummary | None,
        *,
        samples: bool = True,
    ) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "livepanel_connections", _HELP_CONNECTIONS, labels=["transport"]
        )
        shakes = CounterMetricFamily("livepanel_handshakes", _HELP_HANDSHAKES, labels=["status"])
        replayed = CounterMetricFamily("livepanel_replays", _HELP_REPLAYS, labels=["outcome"])
        sse_fallbacks = CounterMetricFamily("livepanel_sse_fallbacks", _HELP_FALLBACKS)
        counters = [CounterMetricFamily(f"livepanel_{n}", h) for n, _, h in _COUNTERS]
        backend_lag = GaugeMetricFamily("livepanel_backend_lag_seconds", _HELP_LAG)
        if samples:
            by_transport = stats.get("connections_by_transport") or {}
            for transport in ("websocket", "sse"):
                connections.add_metric([transport], by_transport.get(transport, 0))
            for status, count in sorted(handshakes.items()):
                shakes.add_metric([str(status)], count)
            sse_fallbacks.add_metric([], fallbacks)
            for outcome in ("granted", "unavailable"):
                replayed.add_metric([outcome], replays.get(outcome, 0))
            for family, (_, key, _) in zip(counters, _COUNTERS, strict=True):
                family.add_metric([], stats.get(key, 0))
            backend_lag.add_metric([], lag)
        yield connections
        yield shakes
        yield sse_fallbacks
        yield from counters
        yield replayed
        yield backend_lag
        yield from _lag_histograms(acks)
        if self.histogram is not None:
            yield from self.histogram.describe() if not samples else self.histogram.collect()

    # ------------------------------------------------------------------ the reader's lag

    def backend_lag(self) -> float:
        """The reader's lag in seconds, measured at most :data:`_LAG_REFRESH` seconds ago.

        Measuring asks Redis (``Broadcaster.health()``) on the broadcaster's
        loop. A scrape from another thread waits for the answer (up to a
        second); a scrape on the loop itself gets the previous measurement
        and starts the next one, since it cannot wait for its own loop.
        """
        broadcaster = self.broadcaster
        if reader_status_of(broadcaster.backend) is None:
            return 0.0  # no reader that could trail
        loop = broadcaster.backend_loop
        if loop is None or loop.is_closed() or time.monotonic() - self._lag_at < _LAG_REFRESH:
            return self._lag
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = loop.create_task(self._measure())
            return self._lag
        future = asyncio.run_coroutine_threadsafe(self._measure(), loop)
        try:
            future.result(timeout=1.0)
        except Exception:  # too slow to answer: keep the last value, health says the rest
            future.cancel()
        return self._lag

    async def _measure(self) -> None:
        report = await self.broadcaster.health(timeout=0.9)
        lag = report["readerLagSeconds"]
        if lag is not None:
            self._lag = float(lag)
        self._lag_at = time.monotonic()


def _lag_histograms(acks: LagSummary | None) -> Iterator[Metric]:
    """The acking connections' lag now, as gauge histograms (no samples for ``None``)."""
    readings = () if acks is None else acks.readings
    for name, help_text, bounds, values in (
        ("seconds", _HELP_LAG_SECONDS, LAG_SECOND_BUCKETS, [r.seconds for r in readings]),
        ("events", _HELP_LAG_EVENTS, LAG_EVENT_BUCKETS, [float(r.events) for r in readings]),
    ):
        family = GaugeHistogramMetricFamily(f"livepanel_connection_lag_{name}", help_text)
        if acks is not None:
            buckets = [(floatToGoString(le), float(sum(v <= le for v in values))) for le in bounds]
            buckets.append(("+Inf", float(len(values))))
            family.add_metric([], buckets, sum(values))
        yield family


class _DeliveryTimer(Observer):
    """Observes ``livepanel_delivery_seconds`` once per broadcast event.

    Called by the broadcaster with each batch it fans out; the observation runs
    one loop turn later, after the pass that writes to idle connections, so it
    measures publish to hand-over for the connections keeping up.
    """

    __slots__ = ("histogram",)

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram

    def fanned_out(self, events: Sequence[Event]) -> None:
        if events:
            try:
                asyncio.get_running_loop().call_soon(self._observe, events)
            except RuntimeError:  # no loop runs here: observe now rather than never
                self._observe(events)

    def _observe(self, events: Sequence[Event]) -> None:
        now = time.time()
        observe = self.histogram.observe
        for event in events:
            observe(max(0.0, now - event.timestamp.timestamp()))


def instrument(
    broadcaster: Broadcaster,
    app: LivePanelApp | LivePanelMiddleware | None = None,
    registry: CollectorRegistry | None = None,
) -> LivePanelCollector:
    """Export ``broadcaster``'s (and ``app``'s handshake) numbers as Prometheus metrics.

    Registers in ``registry`` (``prometheus_client.REGISTRY`` by default):
    ``livepanel_connections{transport}``, ``livepanel_handshakes_total{status}``
    and ``livepanel_sse_fallbacks_total`` (both need ``app``),
    ``livepanel_events_published_total``,
    ``livepanel_events_delivered_total``, ``livepanel_events_dropped_total``,
    ``livepanel_slow_disconnects_total``, ``livepanel_replays_total{outcome}``,
    ``livepanel_delivery_seconds`` (a histogram), ``livepanel_backend_lag_seconds``,
    and ``livepanel_connection_lag_seconds`` and ``livepanel_connection_lag_events``
    (gauge histograms of the acking connections' lag, read at scrape time; not copied
    in multi-process mode, where health and ``stats()`` carry it).

    Args:
        broadcaster: the broadcaster whose counters are exported.
        app: whose handshakes are counted (optional): the ``LivePanelApp``, or
            the ``LivePanelMiddleware`` serving it.
        registry: where to register; the default registry when ``None``.

    Returns:
        The registered collector.

    Raises:
        ValueError: this registry already has livepanel's metrics.
        TypeError: ``app`` is neither a ``LivePanelApp`` nor a ``LivePanelMiddleware``.

    Example::

        from prometheus_client import make_asgi_app
        from livepanel.metrics import instrument

        endpoint = LivePanelApp(broadcaster, auth=BasicAuth.from_env())
        app.add_middleware(LivePanelMiddleware, path="/ws", endpoint=endpoint)
        instrument(broadcaster, endpoint)
        app.mount("/metrics", make_asgi_app())
    """
    registry = REGISTRY if registry is None else registry
    histogram = Histogram(
        "livepanel_delivery_seconds", _HELP_DELIVERY, buckets=DELIVERY_BUCKETS, registry=None
    )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # the histogram writes to the directory itself; the rest is copied there
        collector = LivePanelCollector(broadcaster, app)
        _Copier(collector).start()
    else:
        collector = LivePanelCollector(broadcaster, app, histogram)
        registry.register(collector)
    broadcaster.observe(_DeliveryTimer(histogram))
    return collector


# ---------------------------------------------------------------------- several processes


class _Copier:
    """Multi-process mode: copies the collector's numbers into file-backed metrics.

    ``prometheus_client``'s ``MultiProcessCollector`` adds up what every
    process wrote to ``PROMETHEUS_MULTIPROC_DIR``; a collector that reads
    counters at scrape time cannot take part, so a daemon thread copies them
    once a second (:meth:`start`).
    """

    def __init__(self, collector: LivePanelCollector) -> None:
        self.collector = collector
        self.metrics: dict[str, Any] = {
            "livepanel_connections": Gauge(
                "livepanel_connections",
                _HELP_CONNECTIONS,
                ["transport"],
                multiprocess_mode="livesum",
                registry=None,
            ),
            "livepanel_handshakes": Counter(
                "livepanel_handshakes", _HELP_HANDSHAKES, ["status"], registry=None
            ),
            "livepanel_sse_fallbacks": Counter(
                "livepanel_sse_fallbacks", _HELP_FALLBACKS, registry=None
            ),
            "livepanel_replays": Counter(
                "livepanel_replays", _HELP_REPLAYS, ["outcome"], registry=None
            ),
            "livepanel_backend_lag_seconds": Gauge(
                "livepanel_backend_lag_seconds",
                _HELP_LAG,
                multiprocess_mode="livemax",
                registry=None,
            ),
        }
        for name, _, help_text in _COUNTERS:
            self.metrics[f"livepanel_{name}"] = Counter(
                f"livepanel_{name}", help_text, registry=None
            )
        self.copied: dict[tuple[str, tuple[str, ...]], float] = {}

    def copy_once(self) -> None:
        """Counters move by what they moved since the last copy; gauges take the value."""
        for family in self.collector.collect():
            metric = self.metrics.get(family.name)
            if metric is None:
                continue  # the histogram writes to the directory itself
            for sample in family.samples:
                labels = tuple(sample.labels.values())
                child = metric.labels(*labels) if labels else metric
                if family.type == "counter":
                    key = (family.name, labels)
                    delta = sample.value - self.copied.get(key, 0.0)
                    if delta > 0:
                        child.inc(delta)
                        self.copied[key] = sample.value
                else:
                    child.set(sample.value)

    def start(self) -> None:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

        def run() -> None:
            while True:
                with contextlib.suppress(Exception):  # a bad moment must not end the copying
                    self.copy_once()
                with contextlib.suppress(Exception):
                    forget_dead_workers(directory)
                time.sleep(_SYNC_INTERVAL)

        threading.Thread(target=run, name="livepanel-metrics", daemon=True).start()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive, and not ours to judge
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal said it exists
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def forget_dead_workers(directory: str | os.PathLike[str]) -> list[int]:
    """Drop the live gauges that dead processes left in a ``PROMETHEUS_MULTIPROC_DIR``.

    ``prometheus_client`` sums ``livepanel_connections`` over the files of
    every process that wrote one, until ``mark_process_dead(pid)`` removes a
    process's; gunicorn can call that from ``child_exit``, ``uvicorn
    --workers`` has no such hook. So every worker that :func:`instrument`
    set up in multi-process mode calls this once a second: a worker
    SIGKILLed and replaced stops counting within a second, while counters
    (totals since start) keep what it counted. Only for a directory that the
    processes of one host (one PID namespace) share.

    Args:
        directory: the ``PROMETHEUS_MULTIPROC_DIR``.

    Returns:
        The process ids whose live gauges were removed.

    Example::

        forget_dead_workers(os.environ["PROMETHEUS_MULTIPROC_DIR"])  # [] when all live
    """
    pids = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match:
            pids.add(int(match.group(1)))
    dead = sorted(pid for pid in pids if pid != os.getpid() and not _alive(pid))
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker forgot it first
            _mark_process_dead(pid, str(directory))
    return dead
