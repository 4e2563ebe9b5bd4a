#!/usr/bin/env bash
# Install detectron2 (CPU, pure Python) into a virtualenv, to TEST lightning-cam's detectron2
# backend (CI runs it from `make test`). Not the way users should install detectron2: they
# install it from source, `pip install 'git+https://github.com/facebookresearch/detectron2.git'`.
#
# Usage: scripts/install_detectron2.sh [VENV_DIR | PYTHON]     (default: .venv)
#
# Upstream detectron2 is not on PyPI. The sdist `pb1-detectron2==0.6` is upstream v0.6 (same
# Python code and model-zoo configs) without the C++ sources, so an unmodified build fails. It
# runs as pure Python on CPU (ROIAlign and NMS come from torchvision) after these patches of the
# unpacked sdist, each checked (the script fails loudly when a target is missing):
#   * setup.py: no extension modules; the model-zoo configs as package data (package-relative
#     glob); no `black==21.4b2` pin (only LazyConfig.save uses black, lazily);
#   * detectron2/_C.py: a stand-in, imported at import time only; its attributes raise
#     NotImplementedError (rotated boxes, deformable conv, the fast COCO evaluator);
#   * Image.LINEAR -> Image.BILINEAR (Pillow 10+); pkg_resources -> importlib.resources in
#     model_zoo.py (absent from current setuptools); np.bool/np.int/np.float (removed in numpy 2).
# Idempotent: exits at once when detectron2 and its model-zoo configs already import.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${1:-$ROOT/.venv}"
if [[ -d "$TARGET" ]]; then
    PY="$TARGET/bin/python"
else
    PY="$TARGET"
fi
if [[ ! -x "$PY" ]]; then
    echo "install_detectron2: no python at $PY (give a virtualenv folder or a python)" >&2
    exit 2
fi

CHECK='from detectron2 import model_zoo
model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_3x.yaml")
model_zoo.get_config_file("PascalVOC-Detection/faster_rcnn_R_50_C4.yaml")'
# Fast check (no model import): the package imports and its model-zoo configs are there.
QUICK='import importlib.util, pathlib, sys
spec = importlib.util.find_spec("detectron2")
zoo = pathlib.Path(spec.origin).parent / "model_zoo" / "configs" if spec else None
sys.exit(0 if zoo and (zoo / "COCO-Detection/retinanet_R_50_FPN_3x.yaml").is_file()
         and (zoo / "PascalVOC-Detection/faster_rcnn_R_50_C4.yaml").is_file() else 1)'
if "$PY" -c "$QUICK" >/dev/null 2>&1 && "$PY" -c "import detectron2" >/dev/null 2>&1; then
    echo "install_detectron2: detectron2 already installed in $PY"
    exit 0
fi

VERSION="0.6"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PIP=("$PY" -m pip --disable-pip-version-check)

"$PY" -c "import torch, torchvision" || {
    echo "install_detectron2: torch and torchvision must be installed in $PY first" >&2
    exit 2
}
# Without build isolation the venv's own setuptools builds detectron2 and its sdist-only
# dependencies (fvcore, ...): it needs bdist_wheel built in (setuptools >= 70.1; a fresh venv of
# Python 3.11 has 65.5 and no `wheel`).
if ! "$PY" -c 'import setuptools, sys
v = tuple(int(p) for p in setuptools.__version__.split(".")[:2])
sys.exit(0 if v >= (70, 1) else 1)' 2>/dev/null; then
    echo "install_detectron2: upgrading setuptools (>= 70.1) to build without isolation"
    "${PIP[@]}" install -q "setuptools>=70.1"
fi
echo "install_detectron2: downloading pb1-detectron2==$VERSION (sdist)"
# --no-build-isolation: the sdist's setup.py imports torch to prepare its metadata.
"${PIP[@]}" download -q "pb1-detectron2==$VERSION" --no-deps --no-binary :all: \
    --no-build-isolation -d "$WORK"
tar -xzf "$WORK/pb1-detectron2-$VERSION.tar.gz" -C "$WORK"
SRC="$WORK/pb1-detectron2-$VERSION"

echo "install_detectron2: patching"
"$PY" - "$SRC" <<'PATCH'
import re
import sys
from pathlib import Path

src = Path(sys.argv[1])


def replace(rel: str, old: str, new: str, count: int | None = None) -> None:
    path = src / rel
    text = path.read_text()
    found = text.count(old)
    if found == 0 or (count is not None and found != count):
        sys.exit(f"install_detectron2: patch target {old!r} found {found}x in {rel}")
    path.write_text(text.replace(old, new))


replace("setup.py", "ext_modules=get_extensions(),", "ext_modules=[],", 1)
replace("setup.py", 'cmdclass={"build_ext": torch.utils.cpp_extension.BuildExtension},', "", 1)
replace(
    "setup.py",
    'package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
    'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},',
    1,
)
replace("setup.py", '"black==21.4b2",', "", 1)
if not (src / "detectron2/model_zoo/configs/PascalVOC-Detection/faster_rcnn_R_50_C4.yaml").exists():
    sys.exit("install_detectron2: the sdist has no detectron2/model_zoo/configs")

stub = src / "detectron2/_C.py"
if stub.exists():
    sys.exit("install_detectron2: detectron2/_C.py already exists in the sdist")
stub.write_text('''"""Stand-in for detectron2's C++/CUDA extension (not built: pure-Python install).

Imported at import time by a few modules; using any of its operators (rotated boxes, deformable
convolution, the fast COCO evaluator) raises NotImplementedError.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotImplementedError(
        f"detectron2._C.{name}: detectron2 was installed without its C++/CUDA extension"
    )
''')

replace("detectron2/data/transforms/transform.py", "Image.LINEAR", "Image.BILINEAR")
replace("detectron2/model_zoo/model_zoo.py", "import pkg_resources\n",
        "from importlib import resources as _resources\n", 1)
replace(
    "detectron2/model_zoo/model_zoo.py",
    'cfg_file = pkg_resources.resource_filename(\n'
    '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
    '    )',
    'cfg_file = str(_resources.files("detectron2.model_zoo").joinpath("configs", config_path))',
    1,
)
leftover = [p for p in src.rglob("*.py") if "pkg_resources" in p.read_text()
            and "model_zoo" in p.parts]
if leftover:
    sys.exit(f"install_detectron2: pkg_resources still used in {leftover}")

pattern = re.compile(r"\bnp\.(bool|int|float)\b")
changed = 0
for path in sorted((src / "detectron2").rglob("*.py")):
    text = path.read_text()
    new, n = pattern.subn(r"\1", text)
    if n:
        path.write_text(new)
        changed += n
if changed == 0:
    sys.exit("install_detectron2: no np.bool/np.int/np.float found to patch")
print(f"install_detectron2: patched (numpy aliases: {changed})")
PATCH

echo "install_detectron2: installing"
FORCE_CUDA=0 "${PIP[@]}" install -q --no-build-isolation "$SRC"

if ! "$PY" -c "$CHECK"; then
    echo "install_detectron2: detectron2 installed but its model zoo does not import" >&2
    exit 1
fi
echo "install_detectron2: detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)') installed in $PY"
