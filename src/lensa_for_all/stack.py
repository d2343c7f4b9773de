"""The pinned library stack our packaged code installs inside a SageMaker container.

One table for both places code of ours runs remotely: the training source dir's ``requirements.txt`` and
the endpoint's ``code/requirements.txt``. The containers preinstall other versions of some of these
(the Hugging Face DLCs ship their own diffusers/transformers/peft), and a mix of versions is exactly what
broke saving and loading before, so every library our code imports is pinned to the version the test
suite runs with. ``scripts/setup.sh`` installs with these pins as constraints and a test checks the
test environment against them, so "tested" and "shipped" cannot drift apart.

Standard library only: ``scripts/setup.sh`` runs this file directly (``python stack.py``) to print the
constraints before the package is installed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

__all__ = ["PINNED", "OPTIONAL", "MIN_PYTHON", "requirements", "constraints_text"]

# Every library the training loop and the endpoint handler import, at the versions the tests run with.
PINNED: dict[str, str] = {
    "diffusers": "0.42.1",
    "transformers": "5.24.0",
    "accelerate": "1.15.0",
    "peft": "0.21.2",
    "huggingface-hub": "2.4.0",
    "safetensors": "0.8.0",
    "attrs": "26.1.0",
}

# Needed only for some settings; the requirement line is written only when the setting asks for it.
# bitsandbytes has no CPU test here: the GPU acceptance run (benchmarks/gpu_acceptance.py) exercises it.
OPTIONAL: dict[str, str] = {
    "bitsandbytes": "bitsandbytes==0.50.2",
    "tensorboard": "tensorboard>=2.14",
    "wandb": "wandb>=0.16",
    "torchmetrics": "torchmetrics[image]>=1.3",
    # early stopping on face likeness (lensa_for_all.likeness): dlib's wheels (cp312 manylinux_2_28) and models
    "dlib-bin": "dlib-bin==20.0.1.post1",
    "face-recognition-models": "face-recognition-models==0.3.0",
}

# diffusers 0.42 and transformers 5.x need Python >= 3.10 and >= 3.10; diffusers 0.42.1's wheels declare
# Requires-Python >= 3.11 (pip in a Python 3.10 image answers "No matching distribution").
MIN_PYTHON: tuple[int, int] = (3, 11)


def requirements(optional: Iterable[str] = ()) -> list[str]:
    """``requirements.txt`` lines: the pinned stack plus the named optional packages."""
    lines = [f"{name}=={version}" for name, version in PINNED.items()]
    for name in optional:
        if name not in OPTIONAL:
            raise KeyError(f"unknown optional package {name!r}; known: {sorted(OPTIONAL)}")
        lines.append(OPTIONAL[name])
    return lines


def constraints_text() -> str:
    """The pins as a pip constraints file (what ``scripts/setup.sh`` installs the dev environment with)."""
    return "\n".join(requirements()) + "\n"


if __name__ == "__main__":
    sys.stdout.write(constraints_text())
