"""Bundle-portable code imports nothing of the project by absolute import (AST check).

Export copies core/io, core/preprocess, core/files.py, core/errors.py, core/export/weights.py and each kind's
runtime/nets into a bundle's `scripts/` with the same layout, and the bundle runs where `core` cannot be imported.
So these files may reach the project only through relative imports that land on another copied file, and
core/io keeps its optional readers (pydicom, nibabel, Pillow, highdicom) inside the functions that need them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from core.export.bundle import CORE_ROOT, PORTABLE_MODULES, module_files
from core.kinds.classification.bundle import MODULES as CLASSIFICATION_MODULES
from core.kinds.segmentation.bundle import MODULES as SEGMENTATION_MODULES

COPIED = module_files([*PORTABLE_MODULES, *CLASSIFICATION_MODULES, *SEGMENTATION_MODULES])
IO_TOP_LEVEL = {"numpy", "SimpleITK"}  # besides the standard library


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def _target(rel: str, node: ast.ImportFrom) -> str:
    """The file (relative to core/) a relative import names: a module file, or a package's __init__.py."""
    base = Path(rel).parent
    for _ in range(node.level - 1):
        base = base.parent
    parts = node.module.split(".") if node.module else []
    path = base.joinpath(*parts)
    return (path / "__init__.py").as_posix() if (CORE_ROOT / path).is_dir() else path.with_suffix(".py").as_posix()


def test_the_copied_set_holds_every_io_module():
    assert {f"io/{p.name}" for p in (CORE_ROOT / "io").glob("*.py")} <= set(COPIED)


@pytest.mark.parametrize("rel", COPIED)
def test_portable_files_reach_the_project_only_through_copied_relative_imports(rel):
    tree = ast.parse((CORE_ROOT / rel).read_text(encoding="utf-8"), filename=rel)
    for node in _imports(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = _target(rel, node)
            assert target in COPIED, f"{rel}:{node.lineno} imports {target}, which bundles do not copy"
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        for name in names:
            assert name.split(".")[0] not in ("core", "app"), f"{rel}:{node.lineno}: absolute import of {name}"


@pytest.mark.parametrize("rel", [f for f in COPIED if f.startswith("io/")])
def test_io_imports_only_stdlib_numpy_and_simpleitk_at_module_level(rel):
    tree = ast.parse((CORE_ROOT / rel).read_text(encoding="utf-8"), filename=rel)
    for node in tree.body:
        if not isinstance(node, ast.Import | ast.ImportFrom) or getattr(node, "level", 0):
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        for name in names:
            root = name.split(".")[0]
            assert root in sys.stdlib_module_names or root in IO_TOP_LEVEL, (
                f"{rel}:{node.lineno}: {name} at module level (import it inside the function that needs it)"
            )

