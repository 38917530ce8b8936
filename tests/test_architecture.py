"""The package's imports run one way (docs/architecture.md), and each layer knows only what it should.

Every ``import`` in ``src/orbitseg`` (module level and inside functions) is read with ``ast``; a
package may import only the packages listed for it below.  So ``model`` knows tensors, not files
(no ``io``), ``labeling`` knows no server (no ``app``, no web framework), ``io`` knows no pipeline,
``train`` reaches the trained model only through ``predict``'s Segmenter and ``runs``, and only
``runs`` reads checkpoints.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import orbitseg

SRC = Path(orbitseg.__file__).resolve().parent
BASE = {"constants", "errors", "__init__"}
#: package -> the orbitseg packages it may import (besides itself and BASE)
ALLOWED: dict[str, set[str]] = {
    "constants": set(),
    "errors": set(),
    "pretrained": set(),
    "io": set(),
    "preprocess": {"io"},
    "evaluate": {"io"},
    "synth": {"io"},
    "labeling": {"preprocess"},
    "model": {"preprocess"},
    "runs": {"io", "preprocess", "model", "pretrained"},
    "predict": {"io", "preprocess", "model", "runs", "evaluate"},
    "report": {"io", "preprocess", "evaluate", "runs"},
    "train": {"io", "preprocess", "model", "runs", "evaluate", "predict", "report"},
    "app": {"io", "preprocess", "labeling", "predict", "runs", "evaluate"},
    "demo": {"io", "preprocess", "evaluate", "synth", "runs", "predict", "train", "report", "pretrained"},
}
ALLOWED["cli"] = set().union(*ALLOWED.values(), ALLOWED) - {"cli", "constants", "errors"}  # the top: parses and calls
#: third-party modules a package must not import
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "labeling": {"fastapi", "starlette", "uvicorn"},
    "model": {"SimpleITK", "nibabel", "nrrd", "pydicom"},
    "io": {"torch"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    rel = path.relative_to(SRC).parts
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = ["orbitseg", *rel[:-1]][: len(rel) - node.level + 1]
                out.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                out.append((node.lineno, node.module or ""))
    return out


def _package(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0].removesuffix(".py") if len(rel) > 1 or rel[0] != "__init__.py" else "__init__"


MODULES = sorted(p for p in SRC.rglob("*.py"))


def test_every_package_is_in_the_table():
    packages = {_package(p) for p in MODULES} - {"__init__"}
    assert packages == set(ALLOWED), "add the new package to ALLOWED (and to docs/architecture.md)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_one_way(path):
    pkg = _package(path)
    if pkg == "__init__":
        return
    bad = []
    for line, mod in _imports(path):
        parts = mod.split(".")
        if parts[0] == "orbitseg" and len(parts) > 1:
            target = parts[1]
            if target != pkg and target not in BASE and target not in ALLOWED[pkg]:
                bad.append(f"line {line}: {mod} ({pkg} may not import {target})")
        elif parts[0] in FORBIDDEN_THIRD_PARTY.get(pkg, set()):
            bad.append(f"line {line}: {mod} ({pkg} must not depend on {parts[0]})")
    assert not bad, f"{path.relative_to(SRC)}: " + "; ".join(bad)


def test_only_runs_reads_checkpoints_and_only_the_segmenter_loads_networks():
    """torch.load appears in runs/checkpoint.py alone; load_network is called by the Segmenter (and its
    engine, to export graphs) alone (training builds its own network; --init-from reads a state_dict
    through runs)."""
    for path in MODULES:
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(SRC))
        if rel != "runs/checkpoint.py":
            assert "torch.load(" not in text, rel
        if rel not in ("runs/checkpoint.py", "predict/segmenter.py", "predict/engine.py"):
            assert "load_network(" not in text, rel
