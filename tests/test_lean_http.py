"""Flower's HTTP services with their pass-through layers scoped and their Fleet and Runtime
handlers run in place (``common.lean_http``): every request gets the response Flower's own stack
gives it, the scoped layers see only the requests they act on, and only Fleet and Runtime
requests' functions skip the worker thread."""

import asyncio
import re
import threading
from importlib import import_module

import pytest
from flwr.supercore.protobuf.translation import PROTOBUF_MEDIA_TYPE, PROTOBUF_REQUEST_TYPES
from starlette.testclient import TestClient

from fedsynth.common import lean_http
from fedsynth.common.lean_http import ACTS_ON, InlineHandlers, Scoped, lean_superlink, lean_supernode, scoped

#: Every protobuf route of the SuperLink and the SuperNode (Control, Fleet, Runtime), a route no
#: layer knows, and the health probe.
REQUESTS = [*sorted(PROTOBUF_REQUEST_TYPES), ("POST", "/v1/fleet/not-a-route"), ("GET", "/health")]
#: The time of day some Control replies carry (e.g. list-runs' "now").
NOW = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00")


@pytest.fixture
def flower_main(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Flower's SuperLink and SuperNode app modules, their factories restored after the test."""
    link, node = import_module("flwr.superlink.main"), import_module("flwr.supernode.main")
    monkeypatch.setattr(link, "_get_middleware", link._get_middleware)
    monkeypatch.setattr(node, "RuntimeTracingMiddleware", node.RuntimeTracingMiddleware)
    monkeypatch.setattr(node, "create_app", node.create_app)
    return link, node


def responses(app, body: bytes) -> list[tuple[int, bytes, list[tuple[str, str]]]]:  # noqa: ANN001
    """Each request's status, body (without the time of day) and headers (without the date) from ``app``."""
    client = TestClient(app, raise_server_exceptions=False)
    out = []
    for method, path in REQUESTS:
        reply = client.request(method, path, content=body, headers={"content-type": PROTOBUF_MEDIA_TYPE})
        out.append((reply.status_code, NOW.sub(b"NOW", reply.content), sorted((k, v) for k, v in reply.headers.items() if k != "date")))
    return out


@pytest.mark.parametrize("body", [b"", b"\xff\x00 not protobuf"])
@pytest.mark.parametrize("tracing", ["0", "1"])
def test_every_request_gets_the_response_flowers_own_stack_gives(flower_main, monkeypatch, body, tracing) -> None:
    link, node = flower_main
    monkeypatch.setenv("FLWR_TRACING_ENABLED", tracing)
    flower = responses(link.create_app(), body), responses(node.create_app(), body)
    lean_superlink(link, state_in_memory=True)
    lean_supernode(node)
    lean = responses(link.create_app(), body), responses(node.create_app(), body)
    assert lean == flower
    assert {status for status, _, _ in flower[0]} != {200}  # the requests reach Flower's checks and handlers


def test_the_superlink_scopes_the_six_pass_through_layers_and_keeps_the_others(flower_main) -> None:
    link, _ = flower_main
    flower = [item.cls for item in link._get_middleware()]
    lean_superlink(link, state_in_memory=True)
    inline, *lean = link._get_middleware()
    assert inline.cls is InlineHandlers  # outermost, so every layer's functions see the mark
    assert [item.args[0] if item.cls is Scoped else item.cls for item in lean] == flower  # same layers, same order
    assert {item.args[0] for item in lean if item.cls is Scoped} == set(ACTS_ON)
    assert sum(item.cls is Scoped for item in lean) == 6 and len(lean) == 9


class Recorder:
    """A layer that records the paths it is given, then hands the request on."""

    seen: list[str] = []

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        Recorder.seen.append(scope.get("path", scope["type"]))
        await self.app(scope, receive, send)


def test_a_scoped_layer_sees_the_requests_it_acts_on_and_everything_that_is_not_http() -> None:
    reached: list[str] = []

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        reached.append(scope.get("path", scope["type"]))

    layer = Scoped(app, Recorder, lambda scope: scope["path"].startswith("/v1/control/"))
    Recorder.seen = []
    for scope in ({"type": "http", "path": "/v1/control/list-runs"}, {"type": "http", "path": "/v1/fleet/pull-messages"},
                  {"type": "lifespan"}):
        asyncio.run(layer(scope, None, None))
    assert Recorder.seen == ["/v1/control/list-runs", "lifespan"]
    assert reached == ["/v1/control/list-runs", "/v1/fleet/pull-messages", "lifespan"]


def test_scoped_keeps_a_stack_without_those_layers_as_it_is() -> None:
    from starlette.middleware import Middleware

    stack = [Middleware(Recorder)]
    assert scoped(stack) == stack


def test_the_predicates_hold_where_their_layers_act(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from fedsynth.common.lean_http import control_path, fleet_event_logged, tracing_enabled

    def http(path: str, **scope) -> dict:  # noqa: ANN003
        return {"type": "http", "path": path, "headers": [], **scope}

    assert control_path(http("/v1/control/list-runs")) and not control_path(http("/v1/fleet/pull-messages"))
    app = SimpleNamespace(state=SimpleNamespace(fleet_event_log_plugin=None))
    fleet = http("/v1/fleet/pull-messages", app=app)
    assert not fleet_event_logged(fleet)
    app.state.fleet_event_log_plugin = object()
    assert fleet_event_logged(fleet) and not fleet_event_logged({**fleet, "path": "/v1/runtime/pull-messages"})
    monkeypatch.setenv("FLWR_TRACING_ENABLED", "1")
    assert tracing_enabled({})
    monkeypatch.setenv("FLWR_TRACING_ENABLED", "0")
    assert not tracing_enabled({})


def handler_threads(app, paths: list[str]) -> list[bool]:  # noqa: ANN001
    """For each path, whether ``app`` ran a function given to ``run_in_threadpool`` in the event loop's thread."""

    async def handle(path: str) -> bool:
        loop_thread, ran_in = threading.get_ident(), []

        async def endpoint(scope, receive, send) -> None:  # noqa: ANN001
            ran_in.append(await lean_http.run_in_threadpool(threading.get_ident))

        await app(endpoint)({"type": "http", "path": path, "headers": [(b"content-length", b"12")]}, None, None)
        return ran_in == [loop_thread]

    return [asyncio.run(handle(path)) for path in paths]


def test_only_short_fleet_and_runtime_requests_run_their_functions_in_the_event_loops_thread() -> None:
    paths = ["/v1/fleet/pull-messages", "/v1/runtime/pull-object", "/v1/control/stream-logs", "/health", "/v1/fleetx",
             *sorted(lean_http.THREADED_PATHS)]
    expected = [True, True] + [False] * (len(paths) - 2)
    assert handler_threads(InlineHandlers, paths) == expected
    assert handler_threads(lambda endpoint: endpoint, paths) == [False] * len(paths)  # without the layer: worker threads


@pytest.mark.parametrize("length, inline", [(None, False), (b"0", True), (str(lean_http.MAX_INLINE_BODY).encode(), True),
                                            (str(lean_http.MAX_INLINE_BODY + 1).encode(), False), (b"12x", False),
                                            (b"\xb2", False)])  # latin-1 superscript two: str.isdigit, not int
def test_a_body_of_unstated_or_large_length_keeps_its_worker_thread(length: bytes | None, inline: bool) -> None:
    headers = [] if length is None else [(b"content-length", length)]
    assert lean_http.inline_request({"type": "http", "path": "/v1/fleet/push-object", "headers": headers}) is inline


def test_flowers_handlers_and_layers_call_the_scoped_run_in_threadpool(flower_main) -> None:
    link, node = flower_main
    lean_superlink(link, state_in_memory=True)
    lean_supernode(node)
    for name in ("flwr.supercore.protobuf.routing", "flwr.superlink.routers.fleet.node_auth", "fastapi.routing",
                 "starlette.concurrency"):
        assert import_module(name).run_in_threadpool is lean_http.run_in_threadpool, name
    assert node.create_app().user_middleware[0].cls is InlineHandlers


def test_a_superlink_with_a_database_file_keeps_every_handler_in_a_worker_thread(flower_main) -> None:
    from fedsynth.server.link import state_in_memory

    link, _ = flower_main
    flower = [item.cls for item in link._get_middleware()]
    assert state_in_memory(["--insecure"]) and not state_in_memory(["--database", "/var/lib/flwr/superlink.db"])
    lean_superlink(link, state_in_memory=False)
    lean = link._get_middleware()
    assert InlineHandlers not in [item.cls for item in lean] and len(lean) == len(flower)
