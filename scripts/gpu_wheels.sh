#!/usr/bin/env bash
# Collect what benchmarks/gpu_acceptance.py needs on a CUDA machine that has no internet (the device
# machine: x86-64, Python 3.12, torch with CUDA 13, no diffusers), into the ignored folder .gpu-wheels/:
#   - this package built as a wheel;
#   - diffusers, transformers, accelerate, peft pinned to the versions in .venv (read with
#     importlib.metadata, so the GPU run uses what the CPU tests ran with). huggingface-hub stays the
#     device's own (1.33 seen there; transformers and diffusers accept >= 1.32): hub 2.x needs httpx2,
#     httpcore2 and truststore, none of which the device has;
#   - bitsandbytes (8-bit Adam), trimmed to the CUDA 13 kernels the device's torch loads: the full wheel
#     carries one kernel library per CUDA release (43 MB, 129 MB unpacked), which alone would nearly fill
#     the device's 64 MiB transfer limit;
#   - diffusers' reference scripts examples/dreambooth/train_dreambooth{,_lora,_lora_sdxl}.py at v0.40.0, when
#     DIFFUSERS_CHECKOUT points at a diffusers git checkout (they are never committed here).
# What travels to the device is the working tree plus this folder; the total is printed, and the script
# fails before anything travels if it is over the limit. If bitsandbytes is what breaks the limit it is
# left out (the acceptance run then records 8-bit Adam as skipped) rather than the limit exceeded.
#
# Environment: PYTHON (default .venv/bin/python), WHEELS (default .gpu-wheels), DEVICE_PYTHON (3.12),
# BNB_VERSION (0.50.2), BNB_CUDA (kernel-library prefix to keep, default 13: cuda130, cuda132; "all"
# keeps every one), LIMIT_MIB (64), DIFFUSERS_CHECKOUT, REFERENCE_TAG (v0.40.0).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WHEELS=${WHEELS:-.gpu-wheels}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
BNB_VERSION=${BNB_VERSION:-0.50.2}
BNB_CUDA=${BNB_CUDA:-13}
LIMIT_MIB=${LIMIT_MIB:-64}
REFERENCE_TAG=${REFERENCE_TAG:-v0.40.0}
PINNED=(diffusers transformers accelerate peft)

rm -rf "$WHEELS"
mkdir -p "$WHEELS/reference"

# 1. our wheel
"$PY" -m pip wheel -q --no-deps -w "$WHEELS" . >/dev/null

# 2. the pinned libraries, as the device's platform and Python see them
specs=()
for name in "${PINNED[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  specs+=("$name==$version")
done
specs+=("bitsandbytes==$BNB_VERSION")
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
  "${platforms[@]}" -d "$WHEELS" "${specs[@]}"

# 3. bitsandbytes without the kernel libraries of other CUDA releases, ROCm and XPU
if [ "$BNB_CUDA" != "all" ]; then
  "$PY" - "$WHEELS" "$BNB_CUDA" <<'EOF'
import re, sys, zipfile
from pathlib import Path

folder, keep = Path(sys.argv[1]), sys.argv[2]
for wheel in folder.glob("bitsandbytes-*.whl"):
    dropped = re.compile(r"bitsandbytes/libbitsandbytes_(?!cpu\.so$|cuda%s)[^/]+\.so$" % re.escape(keep))
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if dropped.match(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not dropped.match(line.split(b",")[0].decode()))
            dst.writestr(item, data)
    tmp.replace(wheel)
    kept = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
    if not any("cuda" + keep in n for n in kept):
        sys.exit(f"gpu_wheels: bitsandbytes {wheel.name} has no libbitsandbytes_cuda{keep}*.so; set BNB_CUDA")
    print(f"gpu_wheels: bitsandbytes trimmed to {', '.join(sorted(Path(n).name for n in kept))}")
EOF
fi

# the commit these wheels and the tree were taken at (the device's copy of the tree has no .git)
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' + uncommitted src changes')" \
  > "$WHEELS/SOURCE_COMMIT"

# 4. the reference scripts
if [ -n "${DIFFUSERS_CHECKOUT:-}" ]; then
  for script in train_dreambooth.py train_dreambooth_lora.py train_dreambooth_lora_sdxl.py; do
    git -C "$DIFFUSERS_CHECKOUT" show "$REFERENCE_TAG:examples/dreambooth/$script" > "$WHEELS/reference/$script"
  done
else
  echo "gpu_wheels: DIFFUSERS_CHECKOUT not set; the acceptance run will skip the reference sides"
fi

# 5. the total that travels: the working tree (tracked and untracked-not-ignored files) plus this folder
size_of() { "$PY" -c "import os, sys; print(sum(os.path.getsize(p) for p in sys.argv[1:] if os.path.isfile(p)))" "$@"; }
tree_bytes() { git ls-files -z -co --exclude-standard | xargs -0 -r "$PY" -c \
  "import os, sys; print(sum(os.path.getsize(p) for p in sys.argv[1:] if os.path.isfile(p)))" | \
  "$PY" -c "import sys; print(sum(int(x) for x in sys.stdin.read().split()))"; }
limit=$((LIMIT_MIB * 1024 * 1024))
tree=$(tree_bytes)
wheels=$(size_of "$WHEELS"/*.whl "$WHEELS"/reference/* "$WHEELS"/SOURCE_COMMIT)
if [ $((tree + wheels)) -gt "$limit" ] && ls "$WHEELS"/bitsandbytes-*.whl >/dev/null 2>&1; then
  echo "gpu_wheels: over the ${LIMIT_MIB} MiB limit with bitsandbytes; leaving it out (8-bit Adam will be skipped)"
  rm -f "$WHEELS"/bitsandbytes-*.whl
  wheels=$(size_of "$WHEELS"/*.whl "$WHEELS"/reference/*)
fi
echo "gpu_wheels: wheels in $WHEELS:"
for f in "$WHEELS"/*.whl; do printf '  %8.2f MiB  %s\n' "$("$PY" -c "import os,sys; print(os.path.getsize(sys.argv[1])/2**20)" "$f")" "$(basename "$f")"; done
total=$((tree + wheels))
"$PY" -c "import sys; t, w, tot, lim = map(int, sys.argv[1:]); print(f'gpu_wheels: wheels and scripts {w/2**20:.2f} MiB + working tree {t/2**20:.2f} MiB = {tot/2**20:.2f} MiB of {lim/2**20:.0f} MiB')" \
  "$tree" "$wheels" "$total" "$limit"
if [ "$total" -gt "$limit" ]; then
  echo "gpu_wheels: over the limit; nothing would travel. Set BNB_CUDA, drop a package, or shrink the tree." >&2
  exit 1
fi
