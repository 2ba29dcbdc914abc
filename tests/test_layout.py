"""The layout's rules, checked on the real import graph (grimp), not left to a comment.

Layers point one way: entry points (relay.cli, relay.dev) → api and worker → workflows →
activities → relay. Every capability in relay.capabilities has its module in every layer.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import grimp
import pytest
from fastapi import FastAPI

from relay.capabilities import CAPABILITIES
from tests.support.api import api_routes

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("relay", "api", "workflows", "activities")
ENTRY_POINTS = {"relay.cli", "relay.dev"}
# The top-level module worker.py is not a package, so grimp sees it as an external node.
WORKER = "worker"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None, include_external_packages=True)


def _project(graph: grimp.ImportGraph) -> set[str]:
    return {m for m in graph.modules if m.split(".")[0] in PACKAGES}


def _top(module: str) -> str:
    return module.split(".")[0]


def _worker_imports() -> set[str]:
    tree = ast.parse((ROOT / "worker.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return imported


def test_nothing_in_relay_but_the_entry_points_imports_upward(graph: grimp.ImportGraph) -> None:
    upward = {"api", "workflows", "activities", WORKER}
    offenders = sorted(
        f"{importer} imports {imported}"
        for importer in _project(graph)
        if _top(importer) == "relay" and importer not in ENTRY_POINTS
        for imported in graph.find_modules_directly_imported_by(importer)
        if _top(imported) in upward or imported in ENTRY_POINTS
    )
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("activities", {"api", "workflows", WORKER}),
        ("workflows", {"api", WORKER}),
        ("api", {WORKER}),
    ],
)
def test_layers_point_one_way(graph: grimp.ImportGraph, layer: str, forbidden: set[str]) -> None:
    offenders = sorted(
        f"{importer} imports {imported}"
        for importer in _project(graph)
        if _top(importer) == layer
        for imported in graph.find_modules_directly_imported_by(importer)
        if _top(imported) in forbidden or imported in ENTRY_POINTS
    )
    assert not offenders, offenders


def test_the_worker_imports_no_route_and_no_entry_point() -> None:
    offenders = {m for m in _worker_imports() if _top(m) == "api" or m in ENTRY_POINTS}
    assert not offenders, offenders


def test_no_route_module_imports_another(graph: grimp.ImportGraph) -> None:
    routes = {m for m in _project(graph) if m.startswith("api.routes.")}
    packages = {m for m in routes if (ROOT / m.replace(".", "/") / "__init__.py").exists()}
    offenders = sorted(
        f"{importer} imports {imported}"
        for importer in routes - packages
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported in routes or imported == "api.routes"
    )
    assert not offenders, offenders


def test_there_is_no_import_cycle(graph: grimp.ImportGraph) -> None:
    """Tarjan's strongly connected components over the project's own modules."""
    nodes = _project(graph)
    edges = {m: graph.find_modules_directly_imported_by(m) & nodes for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    assert not cycles, cycles


@pytest.mark.parametrize("name", CAPABILITIES)
def test_every_capability_has_its_module_in_every_layer(name: str) -> None:
    routers = importlib.import_module(f"api.routes.{name}").routers
    assert routers and all(router.routes for router in routers)
    workflows = importlib.import_module(f"workflows.{name}").WORKFLOWS
    assert workflows and all(hasattr(cls, "__temporal_workflow_definition") for cls in workflows)
    activities = importlib.import_module(f"activities.{name}").ACTIVITIES
    assert callable(activities.from_context) and callable(activities.activities)
    contracts = importlib.import_module(f"relay.{name}.contracts")
    assert any(callable(getattr(contracts, n)) for n in dir(contracts) if n.endswith("workflow_id"))
    assert (ROOT / "relay" / "models" / f"{name}.py").exists()
    assert (ROOT / "docs" / f"{name}.md").exists()
    assert (ROOT / "tests" / name).is_dir()


def test_contracts_depend_on_the_standard_library_and_temporal_only(
    graph: grimp.ImportGraph,
) -> None:
    allowed = {"temporalio", *sys.stdlib_module_names}
    for name in CAPABILITIES:
        imported = graph.find_modules_directly_imported_by(f"relay.{name}.contracts")
        assert {m for m in imported if _top(m) not in allowed} == set(), name


def test_the_app_serves_every_capability_route() -> None:
    from api.app import PLATFORM_ROUTERS, capability_routers

    app = FastAPI()
    for router in (*PLATFORM_ROUTERS, *capability_routers()):
        app.include_router(router)
    paths = {path for path, _ in api_routes(app)}
    assert {"/v1/runs", "/v1/webhooks", "/v1/events", "/v1/integrations", "/v1/providers"} <= paths


def test_only_the_stripe_sandbox_imports_localstripe(graph: grimp.ImportGraph) -> None:
    # localstripe is GPL-3.0-or-later and a dev/test extra: one sandbox module runs it.
    importers = {m for m in graph.find_modules_that_directly_import("localstripe")}
    assert importers == {"relay.sandbox.stripe_server"}
