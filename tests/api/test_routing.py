"""The app's router order (api/app.py `app_routers`, hot paths first) decides what routing
costs, never which route answers: no two routers serve the same method and path."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from fastapi.routing import APIRoute
from starlette.routing import compile_path

from api.app import HOT_PATHS, app_routers
from relay.settings import Settings


def _example(path: str) -> str:
    """A concrete path the template matches (each parameter as a plain segment)."""
    return re.sub(r"\{[^}]+\}", "p1x", path)


def test_no_two_routers_serve_the_same_method_and_path(
    make_settings: Callable[..., Settings],
) -> None:
    routers = app_routers(make_settings(relay_env="development"))
    routes = [
        (index, route.path, route.methods or set())
        for index, router in enumerate(routers)
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    assert len(routes) > 50
    overlaps = [
        (a_path, sorted(a_methods), b_path)
        for (a, a_path, a_methods), (b, b_path, b_methods) in itertools.permutations(routes, 2)
        if a != b
        and a_methods & b_methods
        and compile_path(b_path)[0].fullmatch(_example(a_path)) is not None
    ]
    assert overlaps == []


def test_the_hot_paths_are_matched_right_after_the_probes(
    make_settings: Callable[..., Settings],
) -> None:
    routers = app_routers(make_settings())
    paths = [
        route.path for router in routers for route in router.routes if isinstance(route, APIRoute)
    ]
    assert paths[:2] == ["/health", "/ready"]
    first_hot = max(paths.index(path) for path in HOT_PATHS)
    assert first_hot < 20, paths[: first_hot + 1]
