"""``package_source_dir``: the training code as a self-contained SageMaker source dir.

The folder holds ``lensa_train.py`` (the script SageMaker runs), ``lensa_for_all/`` (only the modules
the loop and the endpoint handler need, so the upload stays small), ``requirements.txt`` (the pinned
stack of :mod:`lensa_for_all.stack`: the container's own diffusers/transformers are replaced by the
tested versions) and ``training_config.json``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..config import TrainingConfig
from ..stack import requirements

__all__ = ["package_source_dir", "ENTRY_SCRIPT", "PACKAGED_MODULES", "requirements_for"]

ENTRY_SCRIPT = "lensa_train.py"

# What of lensa_for_all the source dir carries (relative to the package root): every top-level module (the
# small shared ones: errors, atomic, config, ...; listing them by hand broke each time one was added), and the
# sub-packages the entry point and the endpoint handler import. The launcher copies the same package into the
# model's code/ for the endpoint. The CLI, the pipeline, the backends but the endpoint secrets (which the launcher
# and the handler read), the test kit and the deprecated old module paths (lensa_for_all.moved) stay out.
PACKAGED_MODULES = ("*.py", "py.typed", "backends/__init__.py", "backends/endpoint_secrets.py",
                    "training", "generation", "prompts")


_ENTRY_TEXT = '''"""SageMaker entry point written by lensa-for-all's package_source_dir; runs the DreamBooth loop."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the packaged lensa_for_all wins over any installed copy

from lensa_for_all.training.entry import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], source_dir=HERE))
'''


def requirements_for(config: TrainingConfig) -> list[str]:
    """The ``requirements.txt`` lines for ``config``: the pinned stack plus what its settings need."""
    optional = []
    if config.use_8bit_adam:
        optional.append("bitsandbytes")
    if config.report_to in ("tensorboard", "wandb"):
        optional.append(config.report_to)
    if config.early_stopping and config.early_stopping_metric == "fid":
        optional.append("torchmetrics")
    if config.early_stopping and config.early_stopping_metric == "likeness":
        optional += ["dlib-bin", "face-recognition-models"]
    return requirements(optional)


def _is_old_path(path: Path, package_root: Path) -> bool:
    from ..moved import MOVED, SPLIT

    if path.suffix != ".py":
        return False
    module = ".".join(("lensa_for_all", *path.relative_to(package_root).with_suffix("").parts))
    return module in MOVED or module in SPLIT


def package_source_dir(config: TrainingConfig, dest: str | os.PathLike[str]) -> Path:
    """Write the source dir into ``dest`` (replacing an earlier one) and return ``dest``."""
    from ..atomic import write_text_atomic

    dest = Path(dest)
    package_root = Path(__file__).resolve().parents[1]
    target = dest / "lensa_for_all"
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pattern in PACKAGED_MODULES:
        for src in sorted(package_root.glob(pattern)):
            if _is_old_path(src, package_root):
                continue
            out = target / src.relative_to(package_root)
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, out, ignore=ignore)
            else:
                shutil.copy2(src, out)
    write_text_atomic(dest / ENTRY_SCRIPT, _ENTRY_TEXT)
    write_text_atomic(dest / "requirements.txt", "\n".join(requirements_for(config)) + "\n")
    config.to_json(dest / "training_config.json")
    return dest
