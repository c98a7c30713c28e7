#!/usr/bin/env bash
# The MONAI model zoo's own checks, run unchanged and offline on an unpacked package.
#
#   .ci/zoo_checks.sh MODEL_ZOO_CHECKOUT PACKAGE SCHEMA_JSON [WORK_DIR]
#
# MODEL_ZOO_CHECKOUT: a Project-MONAI/model-zoo checkout (its ci/, setup.cfg and models/model_info.json).
# PACKAGE: the zip of `python -m bundle package`, or an unpacked package folder (zip or --format hf).
# SCHEMA_JSON: the metadata schema named by configs/metadata.json (meta_schema_20240725.json), saved
#   locally: the zoo's ci/prepare_schema.py downloads it to eval/schema.json, which needs the internet.
# WORK_DIR: where the zoo copy is built (default: a new temporary folder); the checkout is not touched.
#
# Runs, in this order, as the zoo's CPU premerge does: ci/verify_bundle.py -m min (required files,
# large_files.yml, version and changelog, metadata against the schema) and -m full
# (properties of the inference config, verify_net_in_out, ckpt_export of models/model.pt without
# --key_in_ckpt); then the zoo's code style with its setup.cfg: black --skip-magic-trailing-comma,
# isort, flake8; and the rules of the zoo's pre-commit JSON, end-of-file and whitespace hooks
# (pre-commit itself needs the hooks' repositories from the internet).
set -euo pipefail
if [[ $# -lt 3 ]]; then
    sed -n 2,10p "$0"
    exit 2
fi
zoo=$(cd "$1" && pwd)
package=$(realpath "$2")
schema=$(realpath "$3")
work=${4:-$(mktemp -d)}
name=fetal_nt_roi_cae
mkdir -p "$work/models"
work=$(cd "$work" && pwd)
rm -rf "$work/ci" "$work/models/$name"
cp -r "$zoo/ci" "$work/ci"
cp "$zoo/setup.cfg" "$work/setup.cfg"
if [[ -f "$zoo/models/model_info.json" ]]; then cp "$zoo/models/model_info.json" "$work/models/"; else echo "{}" >"$work/models/model_info.json"; fi
if [[ -d "$package" ]]; then
    cp -r "$package" "$work/models/$name"
else
    unpacked=$(mktemp -d)
    python -m zipfile -e "$package" "$unpacked"
    cp -r "$unpacked/$name" "$work/models/$name"
fi
mkdir -p "$work/models/$name/eval"
cp "$schema" "$work/models/$name/eval/schema.json"
cd "$work"
echo "== verify_bundle.py -m min"
python ci/verify_bundle.py -b "$name" -m min
echo "== verify_bundle.py -m full"
python ci/verify_bundle.py -b "$name" -m full
rm -rf "models/$name/eval" "models/$name/models/verify_model.ts"
echo "== black --skip-magic-trailing-comma --check"
black --skip-magic-trailing-comma --line-length 120 --check "models/$name"
echo "== isort --check (the zoo's setup.cfg)"
isort --settings-path setup.cfg --check-only "models/$name"
echo "== flake8 (the zoo's setup.cfg)"
flake8 --config setup.cfg "models/$name"
echo "== pre-commit rules: pretty-format-json --no-sort-keys --indent=4, end-of-file-fixer, trailing-whitespace"
python - "models/$name" <<'PY'
import json, pathlib, sys

bad = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*")):
    if not path.is_file() or path.suffix in (".pt", ".ts", ".onnx", ".npz", ".png", ".zip"):
        continue
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        continue
    if path.suffix == ".json" and text != json.dumps(json.loads(text), indent=4, ensure_ascii=False) + "\n":
        bad.append(f"{path}: not as pretty-format-json --no-sort-keys --indent=4 writes it")
    if text and (not text.endswith("\n") or text.endswith("\n\n")):
        bad.append(f"{path}: must end with exactly one newline")
    if any(line != line.rstrip() for line in text.splitlines()):
        bad.append(f"{path}: trailing whitespace")
print("\n".join(bad) or "ok")
sys.exit(1 if bad else 0)
PY
echo "all zoo checks passed on $work/models/$name"
