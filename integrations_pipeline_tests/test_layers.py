"""Imports point one way, down the layers of docs/architecture.md ("Layers as built"); this test fails on an upward
arrow."""

import ast
from pathlib import Path

import pytest

import integrations_pipeline

PACKAGE_ROOT = Path(integrations_pipeline.__file__).parent

# Highest first. A module may import from its own layer and from layers below it, never from above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("definitions", "cli", "devstack")),
    ("orchestration", ("assets", "sensors", "schedules", "jobs", "partitions", "backfills", "catalog_refresh")),
    ("resources", ("resources", "warehouse", "replica")),
    ("gateway", ("gateway",)),
    ("clients", ("clients", "webhooks_out")),
    ("core", ("store", "crypto", "settings", "records", "fields", "frames", "mapping", "httpserver", "metrics")),
    ("sandbox", ("sandbox",)),
]
# Third-party packages a layer must never import, whatever the layer order says.
FORBIDDEN_LIBRARIES = {
    "gateway": ("dagster",),
    "clients": ("dagster",),
    "core": ("dagster", "httpx"),
    "sandbox": ("dagster", "httpx"),
}


def layer_of(module: str) -> int:
    top = module.removeprefix("integrations_pipeline.").split(".")[0]
    for rank, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return rank
    raise AssertionError(f"integrations_pipeline.{top} belongs to no layer: add it to LAYERS")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


MODULES = sorted(path for path in PACKAGE_ROOT.rglob("*.py") if "migrations" not in path.parts or path.name == "env.py")


def module_name(path: Path) -> str:
    return ".".join(("integrations_pipeline", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)).removesuffix(
        ".__init__"
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE_ROOT)))
def test_imports_point_down(path: Path) -> None:
    name = module_name(path)
    if name == "integrations_pipeline":
        return
    own = layer_of(name)
    layer_name = LAYERS[own][0]
    upward = [
        imported
        for imported in imports_of(path)
        if imported.startswith("integrations_pipeline.") and layer_of(imported) < own
    ]
    assert not upward, f"{name} ({layer_name}) imports from a higher layer: {upward}"
    if layer_name == "sandbox":
        product = [i for i in imports_of(path) if i.startswith("integrations_pipeline.") and layer_of(i) != own]
        assert not product, f"{name}: the sandbox imports nothing of the product: {product}"
    banned = FORBIDDEN_LIBRARIES.get(layer_name, ())
    offending = [i for i in imports_of(path) if i.split(".")[0] in banned]
    assert not offending, f"{name} ({layer_name}) must not import {offending}"


def test_the_guard_itself_catches_an_upward_import(tmp_path: Path) -> None:
    offender = tmp_path / "bad.py"
    offender.write_text("from integrations_pipeline.resources import IntegrationsResource\n")
    assert layer_of("integrations_pipeline.resources") < layer_of("integrations_pipeline.clients.hubspot")
    assert "integrations_pipeline.resources" in imports_of(offender)
