"""The MONAI model zoo's own conventions (issue 17): packages, formatting, JSON and text files.

The zoo's pre-commit hooks (``pretty-format-json --no-sort-keys --indent=4``, ``end-of-file-fixer``,
``trailing-whitespace``, ``mixed-line-ending``, ``check-executables-have-shebangs``) and its code
checks (black ``--skip-magic-trailing-comma``, isort with the black profile, flake8 with its
``setup.cfg`` selection) are applied here with the zoo's options, so a bundle that passes them
passes the zoo's checks unchanged.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys

from bundle.utils.paths import METADATA_FILE, REPO_ROOT

#: what the configs need without importing it in bundle code: the metric logger, MONAI's bundle CLI,
#: the attention blocks of MONAI's DiffusionModelUNet (Diff-ICE)
CONFIG_RUNTIME = {"tensorboard", "fire", "einops"}
#: optional extras, imported only when installed (pyproject's ``umap`` extra)
OPTIONAL = {"umap"}
#: reported separately in metadata.json
OWN_FIELDS = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}
#: the zoo's flake8 settings (setup.cfg of Project-MONAI/model-zoo)
FLAKE8 = [
    "--select=B,C,E,F,N,P,T4,W,B9",
    "--max-line-length=120",
    "--ignore=E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419",
    "--per-file-ignores=__init__.py:F401 __main__.py:F401",
]
TEXT_SUFFIXES = {".py", ".json", ".md", ".toml", ".txt", ".sh", ".yml", ".yaml", ".conf", ".cfg", ""}


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in out.split("\0") if name and (REPO_ROOT / name).is_file()]


def _unguarded_imports(tree: ast.AST) -> set[str]:
    """Top-level modules imported outside ``try: ... except ImportError`` blocks."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
        ):
            guarded |= {id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
    modules = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_required_packages_version_lists_everything_the_bundle_imports():
    distributions = importlib.metadata.packages_distributions()
    needed = set(CONFIG_RUNTIME)
    for path in (REPO_ROOT / "bundle").rglob("*.py"):
        if "monailabel_app" in path.parts:  # the MONAI Label app has its own install script
            continue
        for module in _unguarded_imports(ast.parse(path.read_text())):
            if module in sys.stdlib_module_names or module == "bundle" or module in OPTIONAL:
                continue
            assert module in distributions, f"{path}: imports {module}, which no installed distribution provides"
            needed |= {d.lower() for d in distributions[module]}
    metadata = json.loads(METADATA_FILE.read_text())
    listed = {name.lower() for name in metadata["required_packages_version"]}
    for package, field in OWN_FIELDS.items():
        assert metadata[field], field
        needed.discard(package)
    assert needed <= listed, f"add to required_packages_version: {sorted(needed - listed)}"
    for name, version in metadata["required_packages_version"].items():
        assert version and version[0].isdigit(), f"{name}: {version!r} is not a version"


def test_json_files_are_formatted_like_the_zoo_pre_commit_hook():
    unformatted = []
    for name in _tracked_files():
        if name.endswith(".json") and not os.path.islink(REPO_ROOT / name):
            text = (REPO_ROOT / name).read_text()
            if text != json.dumps(json.loads(text), indent=4) + "\n":
                unformatted.append(name)
    assert not unformatted, f"indent 4, keys in their order, one final newline: {unformatted}"


def test_text_files_end_with_one_newline_and_have_no_trailing_whitespace():
    problems = []
    for name in _tracked_files():
        path = REPO_ROOT / name
        if path.suffix not in TEXT_SUFFIXES or path.is_symlink():
            continue
        data = path.read_bytes()
        if not data:
            continue
        if not data.endswith(b"\n") or data.endswith(b"\n\n"):
            problems.append(f"{name}: must end with exactly one newline")
        if b"\r" in data:
            problems.append(f"{name}: CR line endings")
        for number, line in enumerate(data.split(b"\n"), 1):
            if line != line.rstrip():
                problems.append(f"{name}:{number}: trailing whitespace")
    assert not problems, "\n".join(problems)


def test_executable_files_have_a_shebang():
    out = subprocess.run(["git", "ls-files", "-s"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    executables = [line.split("\t")[1] for line in out.splitlines() if line.startswith("100755")]
    for name in executables:
        assert (REPO_ROOT / name).read_bytes().startswith(b"#!"), f"{name} is executable but has no shebang"


def _run(*command: str):
    return subprocess.run([sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True)


def test_black_with_the_zoo_options_changes_nothing():
    result = _run("black", "--check", "--line-length", "120", "--skip-magic-trailing-comma", "bundle", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_isort_with_the_zoo_options_changes_nothing():
    # In a zoo checkout the bundle's own packages are third-party to isort (known_first_party = models).
    options = ["--profile", "black", "--line-length", "120", "--thirdparty", "bundle", "--thirdparty", "lib"]
    result = _run("isort", "--check-only", "--diff", *options, "bundle", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_flake8_with_the_zoo_selection_finds_nothing():
    result = _run("flake8", *FLAKE8, "bundle", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_zoo_checks_script_parses_and_explains_its_arguments():
    script = REPO_ROOT / ".ci" / "zoo_checks.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 2 and "MODEL_ZOO_CHECKOUT PACKAGE SCHEMA_JSON" in result.stdout
