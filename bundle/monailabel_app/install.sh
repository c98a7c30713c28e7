#!/usr/bin/env bash
# Install MONAI Label 0.8.5 into the current Python environment beside the bundle's CPU torch.
#
# A plain `pip install monailabel` would replace torch and pin numpy<2 (through numpymaxflow and
# pydicom-seg), so monailabel and pydicom-seg go in without their declared dependencies and the
# runtime needs are listed here. pydicom-seg imports a module pydicom 3 removed: a small
# compatibility module is installed with a .pth line so every process of the environment sees it.
# Usage (from the repository root, in the bundle's environment):  bash bundle/monailabel_app/install.sh
set -euo pipefail
PYTHON="${PYTHON:-python}"
HERE="$(cd "$(dirname "$0")" && pwd)"

echo "install.sh: MONAI Label 0.8.5 declares numpy<2 and its own torch; they are left out on purpose (torch 2.13.0 CPU and numpy 2 work), so pip's conflict report is switched off here"
"$PYTHON" -m pip install --quiet --no-deps "monailabel==0.8.5" "pydicom-seg==0.4.1"
"$PYTHON" -m pip install --quiet --no-warn-conflicts \
    "torch==2.13.0" "numpy>=2" "pydicom>=3,<4" \
    fastapi uvicorn python-multipart pydantic-settings requests schedule timeloop cachetools watchdog \
    "dicomweb-client[gcp]==0.59.1" jsonschema SimpleITK itk pynrrd girder-client psutil pyjwt passlib \
    expiring-dict pyyaml
SITE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$HERE/compat/fetal_nt_pydicom_compat.py" "$SITE/"
echo "import fetal_nt_pydicom_compat" > "$SITE/fetal_nt_pydicom_compat.pth"
"$PYTHON" -c "import monailabel.interfaces.app, pydicom_seg; print('MONAI Label', __import__('monailabel').__version__, 'ready')"
