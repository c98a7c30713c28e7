"""The package layout stays layered (issue 16): subpackages import only downwards, no private names
cross a subpackage boundary, one helper knows the repository root, config expressions stay short."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from bundle.utils.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "bundle"
# Lowest first: a subpackage may import from its own layer and the ones before it.
LAYERS = [
    "utils",
    "data",
    "model",
    "latent",
    "evaluation",
    "training",
    "deploy",
    "protocol",
    "diffice",
    "benchmarks",
    "monailabel_app",
    "cli",
]
MAX_EXPRESSION = 120


def _subpackage(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def _bundle_imports(path: Path):
    """(line, imported module, imported names) of every ``bundle.*`` import in a file, lazy ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bundle":
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "bundle":
                    yield node.lineno, alias.name, []


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "compat" not in p.parts)


def test_every_subpackage_has_a_layer():
    subpackages = {_subpackage(p) for p in _sources()} - {"__init__", "__main__"}
    assert subpackages <= set(LAYERS), f"add {sorted(subpackages - set(LAYERS))} to LAYERS (and docs/architecture.md)"


def test_subpackages_import_only_downwards():
    upward = []
    for path in _sources():
        source = _subpackage(path)
        if source not in LAYERS:
            continue
        for line, module, names in _bundle_imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else None
            if target is None:  # ``from bundle import __version__`` is the only top-level name
                assert names == ["__version__"], f"{path}:{line} imports {names} from the top-level package"
                continue
            if target in LAYERS and LAYERS.index(target) > LAYERS.index(source):
                upward.append(f"{path.relative_to(REPO_ROOT)}:{line} ({source} -> {target})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_private_names_cross_subpackages():
    leaks = []
    for path in _sources():
        for line, module, names in _bundle_imports(path):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] != _subpackage(path):
                leaks += [f"{path.relative_to(REPO_ROOT)}:{line} {module}.{n}" for n in names if n.startswith("_")]
                leaks += [f"{path.relative_to(REPO_ROOT)}:{line} {module}" for p in parts[2:] if p.startswith("_")]
    assert not leaks, "private names used across subpackages:\n" + "\n".join(leaks)


def test_repository_root_is_known_in_one_place():
    pattern = re.compile(r"__file__\)?\.resolve\(\)\.parents|__file__\)\.parents")
    offenders = [
        str(p.relative_to(REPO_ROOT)) for p in _sources() if pattern.search(p.read_text()) and p.name != "paths.py"
    ]
    assert not offenders, f"use bundle.utils.paths.REPO_ROOT instead of Path(__file__).parents in {offenders}"


def test_subpackage_inits_hold_only_their_docstring():
    """Names are imported from their modules; an ``__init__`` lists its modules in its docstring, nothing else."""
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        if "monailabel_app" in init.parts:
            continue
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{init.relative_to(REPO_ROOT)}: only a docstring"


def _expressions(node, where: str, prefixes: tuple[str, ...] = ("$",)):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _expressions(value, f"{where}#{key}", prefixes)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _expressions(value, f"{where}#{i}", prefixes)
    elif isinstance(node, str) and node.startswith(prefixes):
        yield where, node


def test_config_expressions_are_short():
    long = []
    for path in sorted((REPO_ROOT / "configs").rglob("*.json")):
        for where, expression in _expressions(json.loads(path.read_text()), path.relative_to(REPO_ROOT).as_posix()):
            if len(expression) > MAX_EXPRESSION:
                long.append(f"{where}: {len(expression)} characters")
    assert not long, f"$ expressions over {MAX_EXPRESSION} characters (make them components):\n" + "\n".join(long)


def test_configs_name_what_they_reference():
    """No positional ``#<number>`` references: a list entry is named where it is defined (issue 33)."""
    positional = re.compile(r"[@%][\w#.]*#\d+\b")
    found = []
    for path in sorted((REPO_ROOT / "configs").rglob("*.json")):
        for where, value in _expressions(json.loads(path.read_text()), path.name, prefixes=("$", "@", "%")):
            found += [f"{where}: {value}" for _ in positional.findall(value)]
    assert not found, "positional references:\n" + "\n".join(found)


def test_train_config_reads_top_down():
    """Every top-level block of train.json refers only to blocks above it (issue 33: reading order)."""
    config = json.loads((REPO_ROOT / "configs/train.json").read_text())
    position = {key: i for i, key in enumerate(config)}
    forward = []
    for key, value in config.items():
        for ref in set(re.findall(r"[@%]([A-Za-z_]\w*)", json.dumps(value))):
            if ref in position and position[ref] > position[key]:
                forward.append(f"{key} -> {ref}")
    assert not forward, "references to blocks further down:\n" + "\n".join(sorted(forward))
