"""Imports point one way (docs/DESIGN layering): no module imports a higher layer, and there is no import circle.

Every ``import`` in every module counts, including those inside functions: a lazy import is still a
dependency. Layers, lowest first (a module may import its own layer or lower):

0. foundations: errors, paths, progress, provenance, plain, console, presets, graft.hf.config, names (each registry's
   names),
   the package root, and the schema's base (schema.base: the node class, value types, errors that name the key)
1. pure functions on tensors and modules: surgery, graft.block, graft.translators, graft.losses, metrics, artifacts, cache,
   generation
2. loading and building things: models, data; the schema's nodes (schema.models, .graft, .skillpack, .transplant)
3. LightningModules and what drives them: modules, pretraining, callbacks, training
4. the three methods: graft (grafted, hf, tuned_block, finetuning, alignment, distillation), skillpack, transplant
5. scoring and tables: evaluation, reporting
6. the typed API: api
7. the Hydra edge: run_context, the schema's root (grafting.schema: validate_config, which reads the stage and
   alignment-method registries), cli, stages (no module imports a stage: they share helpers)
8. entry points: train.py, evaluate.py
"""

from __future__ import annotations

import ast
from pathlib import Path

from grafting.stages.registry import STAGES

ROOT = Path(__file__).resolve().parents[1]
LAYERS: dict[str, int] = {
    "grafting": 0, "grafting.errors": 0, "grafting.paths": 0, "grafting.progress": 0, "grafting.provenance": 0,
    "grafting.plain": 0, "grafting.graft.hf.config": 0, "grafting.names": 0, "grafting.presets": 0,
    "grafting.console": 0,
    "grafting.schema.base": 0,
    "grafting.surgery": 1, "grafting.graft.block": 1, "grafting.graft.translators": 1, "grafting.graft.losses": 1, "grafting.metrics": 1,
    "grafting.artifacts": 1, "grafting.cache": 1, "grafting.generation": 1, "grafting.threads": 1,
    "grafting.models": 2, "grafting.data": 2,
    "grafting.schema.models": 2, "grafting.schema.graft": 2, "grafting.schema.skillpack": 2, "grafting.schema.transplant": 2,
    "grafting.modules": 3, "grafting.pretraining": 3, "grafting.callbacks": 3, "grafting.training": 3,
    "grafting.graft": 4, "grafting.graft.grafted": 4, "grafting.graft.hf": 4, "grafting.graft.hf.modeling": 4,
    "grafting.graft.tuned_block": 4,
    "grafting.graft.finetuning": 4, "grafting.graft.alignment": 4, "grafting.graft.distillation": 4, "grafting.skillpack": 4, "grafting.transplant": 4,
    "grafting.evaluation": 5, "grafting.reporting": 5,
    "grafting.api": 6,
    "grafting.run_context": 7, "grafting.schema": 7, "grafting.cli": 7, "grafting.stages": 7,
    "train": 8, "evaluate": 8,
}
# The stages (grafting/stages/registry.py): no module imports one of them (the dispatcher loads them by
# name). Other modules under grafting/stages/ are helpers the stages share (common.py and the like).
STAGE_MODULES = set(STAGES.values())
# Known violations in code owned by other helpers, until their owners fix them. Keep this short and exact
# (test_allow_list_is_exact fails on an entry that no longer occurs).
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    files = sorted((ROOT / "grafting").rglob("*.py")) + [ROOT / "train.py", ROOT / "evaluate.py"]
    return {module_name(p): p for p in files}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return {m for m in found if m in known and m != name}


def layer(name: str) -> int:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{name} has no layer: add it to LAYERS in tests/test_layering.py")


def import_graph() -> dict[str, set[str]]:
    mods = sources()
    known = set(mods)
    graph = {name: imports_of(name, path, known) for name, path in mods.items()}
    # Importing ``a.b.c`` runs ``a`` and ``a.b`` first, but that is the package's own business, not a
    # dependency of the importer on the package root, so parents are not added.
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, deps in graph.items():
        for dep in deps:
            if (name, dep) in ALLOWED:
                continue
            if layer(dep) > layer(name):
                bad.append(f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})")
            elif dep in STAGE_MODULES:
                bad.append(f"{name} imports the stage {dep}: share a helper in grafting/stages/common.py")
    return sorted(bad)


def circles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for name in sources():
        layer(name)


def test_no_upward_import():
    bad = upward_imports(import_graph())
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_no_import_circle():
    bad = circles(import_graph())
    assert not bad, "import circles:\n" + "\n".join(" <-> ".join(c) for c in bad)


def test_allow_list_is_exact():
    graph = import_graph()
    stale = sorted(e for e in ALLOWED if e[1] not in graph.get(e[0], set()))
    assert not stale, f"these allowed imports no longer occur: remove them from ALLOWED: {stale}"


def test_the_checks_catch_what_they_should():
    graph = {"grafting.surgery": {"grafting.stages.finetune"}, "grafting.stages.finetune": {"grafting.surgery"},
             "grafting.stages.align": {"grafting.stages.finetune"}}
    assert upward_imports(graph) == [
        "grafting.stages.align imports the stage grafting.stages.finetune: share a helper in "
        "grafting/stages/common.py",
        "grafting.surgery (layer 1) imports grafting.stages.finetune (layer 7)",
    ]
    assert circles(graph) == [("grafting.stages.finetune", "grafting.surgery")]
