"""Flower's HTTP services without the middleware layers that pass a request through unchanged.

Flower 1.41 serves its SuperLink (Fleet, Control and Runtime APIs) and each SuperNode's Runtime
API as FastAPI apps. Every request, a SuperNode's poll for messages as much as an operator's
command, passes through each layer of the app's middleware: nine on the SuperLink, three on a
SuperNode, each a Starlette ``BaseHTTPMiddleware`` that wraps the request and its response in a
task group and memory streams. Six of the SuperLink's nine act on Control API paths only
(``/v1/control/``), on Fleet paths only when an event-log plugin is loaded, or only with
``FLWR_TRACING_ENABLED=1``, and hand every other request on as they got it; so does the
SuperNode's tracing layer. In a deployment most requests are Fleet and Runtime API calls: a
3-organisation job makes some tens of thousands, and the layers that did nothing with them took
more CPU than everything else the SuperLink did (2.6 ms of CPU per request through the whole
stack, 1.0 ms with those layers skipped where they do nothing).

:class:`Scoped` puts such a layer in its place in the stack but sends it only the requests it
acts on (its :data:`ACTS_ON` predicate, the same condition under which the layer itself passes
the request on unchanged); every other request goes to the next layer directly.
:func:`lean_superlink` and :func:`lean_supernode` install it in Flower's app factories before the
services start. What a request may do, who is authenticated and how, and every response stay
Flower's: the layers that act on Fleet and Runtime requests (error translation, protobuf
translation, SuperNode authentication) run for every request, as before.

Flower's handlers are plain functions that FastAPI and Flower's own routing and middleware hand
to a worker thread (Starlette's ``run_in_threadpool``) and await. For a Fleet or Runtime API
request that hand-off cost more than the handler: almost all are short look-ups or updates of the
service's in-memory state and object store, or a signature check. :class:`InlineHandlers`, the
outermost layer, marks such requests (:func:`inline_request`), and :func:`run_in_threadpool`,
which replaces Starlette's in Flower's and FastAPI's modules, runs a marked request's functions in
the event loop's thread. Everything else still goes to a worker thread, so that no wait stalls the
service: the Control API (its log and event streams wait between chunks), the Runtime routes that
may wait on the network or on a model (:data:`THREADED_PATHS`: Flower Hub downloads for due
automations, OAuth refreshes, model responses), and every request whose body is over
:data:`MAX_INLINE_BODY` or of unstated length (what a large body costs to check and store stays
off the event loop). Only a SuperLink whose state is in memory (``deploy local``) marks requests:
with a database file (``--database``) its handlers write to SQLite and may wait for its lock. A
SuperNode's state is always in memory. Measured on a 3-organisation loopback job (teacher phase):
the SuperLink's CPU 49 s -> 34 s, the three SuperNodes' 40 s -> 31 s.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from functools import partial
from types import ModuleType
from typing import Any, TypeVar

import starlette.concurrency

from flwr.superlink.routers.control import middlewares as control
from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
from flwr.supercore.routers.runtime.tracing import RuntimeTracingMiddleware
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
T = TypeVar("T")

#: The requests whose handlers may run in the event loop's thread: the Fleet and Runtime APIs ...
INLINE_PREFIXES = ("/v1/fleet/", "/v1/runtime/")
#: ... but for these Runtime routes, whose handlers may wait on the network or a model's reply ...
THREADED_PATHS = frozenset({"/v1/runtime/acquire-task", "/v1/runtime/start-automation",
                            "/v1/runtime/get-connector", "/v1/runtime/responses"})
#: ... and only with a body of stated length up to this many bytes.
MAX_INLINE_BODY = 1 << 20
#: Starlette's own ``run_in_threadpool``, for every request :class:`InlineHandlers` did not mark.
THREADPOOL = starlette.concurrency.run_in_threadpool
_inline: ContextVar[bool] = ContextVar("fedsynth_inline_handlers", default=False)


def path(scope: Scope) -> str:
    """The request's path as the layers read it (``request.url.path``)."""
    return Request(scope).url.path


def control_path(scope: Scope) -> bool:
    """A Control API request (the Control layers' own test of the path)."""
    return control._is_control_path(path(scope))  # noqa: SLF001


def fleet_event_logged(scope: Scope) -> bool:
    """A Fleet API request while the SuperLink has a Fleet event-log plugin."""
    return path(scope).startswith("/v1/fleet/") and getattr(scope["app"].state, "fleet_event_log_plugin", None) is not None


def tracing_enabled(_scope: Scope) -> bool:
    """Flower's runtime tracing is on (read per request, as the layer reads it)."""
    return os.getenv("FLWR_TRACING_ENABLED") == "1"


#: The layers that hand a request on unchanged unless the predicate holds for it.
ACTS_ON: dict[type, Callable[[Scope], bool]] = {
    control.ControlSensitiveResponseMiddleware: control_path,
    control.ControlAuthenticationMiddleware: control_path,
    control.ControlLicenseMiddleware: control_path,
    control.ControlEventLogMiddleware: control_path,
    FleetEventLogMiddleware: fleet_event_logged,
    RuntimeTracingMiddleware: tracing_enabled,
}


class Scoped:
    """An ASGI middleware: ``layer`` (built on the next app, with ``options``) for the HTTP requests
    for which ``acts_on`` holds and for everything that is not an HTTP request; the next app
    directly for the others."""

    def __init__(self, app: ASGIApp, layer: type, acts_on: Callable[[Scope], bool], *args: Any, **options: Any) -> None:
        self.app, self.acts_on = app, acts_on
        self.layer = layer(app, *args, **options)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http" and not self.acts_on(scope):
            await self.app(scope, receive, send)
        else:
            await self.layer(scope, receive, send)


def scoped(stack: list[Middleware]) -> list[Middleware]:
    """``stack`` with each layer of :data:`ACTS_ON` in its place, scoped to what it acts on."""
    return [
        Middleware(Scoped, item.cls, ACTS_ON[item.cls], *item.args, **item.kwargs) if item.cls in ACTS_ON else item
        for item in stack
    ]


async def run_in_threadpool(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Starlette's ``run_in_threadpool``, but in the calling thread while a request that
    :class:`InlineHandlers` marked is handled."""
    if _inline.get():
        return func(*args, **kwargs)
    return await THREADPOOL(func, *args, **kwargs)


def inline_request(scope: Scope) -> bool:
    """An HTTP request under :data:`INLINE_PREFIXES`, not to :data:`THREADED_PATHS`, whose body has
    a stated length of at most :data:`MAX_INLINE_BODY` bytes."""
    if scope["type"] != "http":
        return False
    where = path(scope)
    length = Headers(scope=scope).get("content-length", "")
    return (where.startswith(INLINE_PREFIXES) and where not in THREADED_PATHS
            and length.isascii() and length.isdigit() and int(length) <= MAX_INLINE_BODY)


class InlineHandlers:
    """An ASGI middleware that marks the requests :func:`inline_request` admits while the app
    handles them, so that :func:`run_in_threadpool` runs their functions in place."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if not inline_request(scope):
            await self.app(scope, receive, send)
            return
        token = _inline.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            _inline.reset(token)


def inline_handlers() -> None:
    """Point ``run_in_threadpool`` at :func:`run_in_threadpool` in Starlette and in every loaded
    module of Flower, FastAPI and Starlette that imported Starlette's. Harmless to any app without
    :class:`InlineHandlers`: nothing marks its requests."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("flwr", "fastapi", "starlette") and getattr(module, "run_in_threadpool", None) is THREADPOOL:
            module.run_in_threadpool = run_in_threadpool


def lean_superlink(module: ModuleType, state_in_memory: bool) -> None:
    """Make ``module`` (``flwr.superlink.main``) build its app with :func:`scoped` middleware,
    under :class:`InlineHandlers` when the SuperLink's state is in memory."""
    get_middleware = module._get_middleware  # noqa: SLF001
    outermost = [Middleware(InlineHandlers)] if state_in_memory else []
    module._get_middleware = lambda: [*outermost, *scoped(get_middleware())]  # noqa: SLF001
    if state_in_memory:
        inline_handlers()


def lean_supernode(module: ModuleType) -> None:
    """Make ``module`` (``flwr.supernode.main``) add its tracing layer scoped to tracing being on,
    and :class:`InlineHandlers` outermost."""
    module.RuntimeTracingMiddleware = partial(Scoped, layer=RuntimeTracingMiddleware, acts_on=tracing_enabled)
    create_app = module.create_app

    def create_inline_app(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 (Flower's FastAPI app)
        app = create_app(*args, **kwargs)
        app.add_middleware(InlineHandlers)
        return app

    module.create_app = create_inline_app
    inline_handlers()
