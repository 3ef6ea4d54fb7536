"""optuna-dashboard for a study storage, on loopback unless the user says otherwise (`automl-nn dashboard`).

The dashboard is optuna-dashboard's WSGI app served by wsgiref in a thread: `Dashboard.stop()`
shuts it down in under a second, which optuna-dashboard's own `run_server()` (it blocks, with no
stop handle) cannot do. The app sees the storage through `LabelledStorage`, which adds each
objective's unit to the metric names it reads ("params (count)"), so the dashboard's axes carry
units without rewriting anything stored. Per-trial artifacts are served from `backends.artifact_dir`.

The dashboard has no authentication: anyone who reaches the port can read the study and write notes.
Binding to anything but loopback therefore needs an explicit acknowledgement.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.storages import BaseStorage
from optuna.study._frozen import FrozenStudy

from automl_nn import vocab
from automl_nn.errors import UsageError

log = logging.getLogger(__name__)

METRIC_NAMES_ATTR = "study:metric_names"  # where Optuna keeps set_metric_names(); the dashboard reads it
ACK_FLAG = "--i-know-no-auth"


class DashboardError(UsageError):
    """A host that needs acknowledging, or a port that cannot be bound."""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1); other names count as exposed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything: treat it as reachable from outside


def check_host(host: str, acknowledged: bool) -> None:
    """Refuse a non-loopback host unless the user acknowledged that there is no authentication."""
    if not is_loopback(host) and not acknowledged:
        raise DashboardError(
            f"--host {host}: the dashboard would be reachable from other machines, and it has no "
            "authentication (anyone who reaches it can read every study and write notes). Use the "
            f"default --host 127.0.0.1 (and an SSH tunnel), or pass {ACK_FLAG} to expose it anyway."
        )


def unit_label(name: str) -> str:
    """`params` -> `params (count)`: what the dashboard shows on its axes."""
    unit = vocab.METRICS.get(name).unit if name in vocab.METRICS else ""
    return f"{name} ({unit})" if unit else name


def _labelled(system_attrs: dict[str, Any]) -> dict[str, Any]:
    names = system_attrs.get(METRIC_NAMES_ATTR)
    if not isinstance(names, list):
        return system_attrs
    return {**system_attrs, METRIC_NAMES_ATTR: [unit_label(str(n)) for n in names]}


class LabelledStorage(BaseStorage):
    """A storage view whose metric names carry units; everything else goes to the wrapped storage."""

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return _labelled(self._inner.get_study_system_attrs(study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        return [FrozenStudy(study_name=s.study_name, direction=None, user_attrs=s.user_attrs,
                            system_attrs=_labelled(s.system_attrs), study_id=s._study_id,
                            directions=s.directions)
                for s in self._inner.get_all_studies()]

    def __getattr__(self, name: str) -> Any:  # methods only some storages have
        return getattr(self._inner, name)


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: LabelledStorage, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


# Every other public storage method goes straight to the wrapped storage (its own, faster versions
# of BaseStorage's defaults included).
for _name, _value in vars(BaseStorage).items():
    if callable(_value) and not _name.startswith("_") and _name not in vars(LabelledStorage):
        setattr(LabelledStorage, _name, _delegate(_name))
LabelledStorage.__abstractmethods__ = frozenset()


def make_app(storage: BaseStorage, artifacts: Path) -> Callable[..., Any]:
    """optuna-dashboard's WSGI app over `storage`, serving artifacts from `artifacts`."""
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore

    artifacts.mkdir(parents=True, exist_ok=True)
    app: Callable[..., Any] = optuna_dashboard.wsgi(
        LabelledStorage(storage),  # type: ignore[abstract]  # methods are delegated below the class
        artifact_store=FileSystemArtifactStore(base_path=artifacts))
    return app


class _QuietHandler(WSGIRequestHandler):
    """wsgiref logs every request to stderr; the dashboard polls, so that would flood the terminal."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Dashboard:
    """A running dashboard: its URL, and `stop()` to shut it down."""

    server: WSGIServer
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/dashboard"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def wait(self) -> None:
        """Block until Ctrl-C (or SIGTERM seen as KeyboardInterrupt), then stop cleanly."""
        try:
            while self.thread.is_alive():
                self.thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


def start(storage: BaseStorage, *, host: str, port: int, artifacts: Path,
          acknowledged: bool = False) -> Dashboard:
    """Bind `host:port` and serve the dashboard in a background thread; a busy port exits 2."""
    check_host(host, acknowledged)
    app = make_app(storage, artifacts)
    try:
        server = make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:
        raise DashboardError(_bind_message(host, port, exc)) from None
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    return Dashboard(server, thread, host, int(server.server_address[1]))


def _bind_message(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        try:
            hint = f"pass another port, e.g. --port {free_port(host)} (free right now)"
        except OSError:
            hint = "pass another --port"
        return (f"port {port} on {host} is already in use (another dashboard or server?); {hint}, "
                "or stop the program holding it.")
    if exc.errno == errno.EACCES:
        return f"port {port} on {host}: permission denied (ports below 1024 need root); pass --port 8080."
    return f"cannot listen on {host}:{port} ({exc.strerror}). Check --host and --port."
