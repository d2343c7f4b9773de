"""Stand-ins for the SageMaker container images: a virtual environment with the image's Python and the
packages it preinstalls, into which our ``requirements.txt`` is installed exactly as the container does.

The container-parity tests run the training entry point and the endpoint handler in these environments,
so "works" means "works with the image's Python and the versions the image already has", not only in our
own venv. Building one downloads the image's torch (a CUDA build of several GB for Python 3.12, which runs
on the CPU), so environments are cached, keyed by what they hold: the image's entry in
``backends/container_images.json``, the requirements text and this builder's version. A changed pin or
image rebuilds; nothing else does.

From the shell (e.g. to try a new image; see docs/sagemaker.md)::

    python -m lensa_for_all.testing.container_env pytorch-2.13-sagemaker
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

__all__ = ["EnvSpec", "ContainerEnv", "find_python", "build_env", "default_cache_root", "BUILDER_VERSION"]

BUILDER_VERSION = "1"
CACHE_ENV = "LENSA_CONTAINER_ENV_CACHE"


def default_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lensa_for_all" / "container-envs")


@attrs.frozen
class EnvSpec:
    """What a stand-in holds before our requirements: a Python version and preinstalled packages."""

    name: str
    python: str
    packages: tuple[tuple[str, str], ...] = attrs.field(
        converter=lambda v: tuple(sorted(dict(v).items())) if isinstance(v, Mapping) else tuple(v))

    @classmethod
    def for_image(cls, image: object) -> EnvSpec:
        from ..backends.images import ContainerImage

        if not isinstance(image, ContainerImage):
            raise TypeError(f"expected a ContainerImage, got {type(image).__name__}")
        return cls(name=image.name, python=image.python, packages=image.packages)

    def key(self, requirements: str) -> str:
        blob = json.dumps({"spec": attrs.asdict(self), "requirements": requirements, "builder": BUILDER_VERSION},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@attrs.frozen
class ContainerEnv:
    """A built stand-in: its interpreter and what the container's install step printed."""

    path: Path
    spec: EnvSpec
    install_log: str
    pip_check: str
    pip_check_ok: bool

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment for running code in the stand-in: no PYTHONPATH, no user site, offline Hub."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                   PATH=f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}")
        env.update(extra or {})
        return env

    def run(self, args: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
            env: Mapping[str, str] | None = None, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), *args], cwd=cwd, env=self.environ(env), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def version(self, dist: str) -> str | None:
        out = self.run(["-c", f"from importlib import metadata; print(metadata.version({dist!r}))"])
        return out.stdout.strip() if out.returncode == 0 else None


def _python_version(exe: str) -> str | None:
    try:
        out = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(version: str) -> Path:
    """An interpreter of ``version`` ("3.12"): ``$LENSA_PYTHON_3_12``, ``python3.12`` on PATH, or pyenv's.

    Raises LookupError naming what was tried, so a test can report the skip.
    """
    tried: list[str] = []
    candidates: list[str] = []
    override = os.environ.get(f"LENSA_PYTHON_{version.replace('.', '_')}")
    if override:
        candidates.append(override)
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(found)
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += [str(p / "bin" / f"python{version}")
                   for p in sorted(pyenv_root.glob(f"versions/{version}.*"), reverse=True)]
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for exe in candidates:
        tried.append(exe)
        if _python_version(exe) == version:
            return Path(exe)
    raise LookupError(f"no Python {version} found (tried {', '.join(tried)}); set LENSA_PYTHON_"
                      f"{version.replace('.', '_')} to one")


def _pip(python: Path, args: Sequence[str], log: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    # pip's notes about missing local wheel folders on this machine's index config are noise, not output
    noise = re.compile(r"^WARNING: Location '.*' is ignored")
    text = "\n".join(line for line in (out.stdout + out.stderr).splitlines() if not noise.match(line))
    log.append(f"$ pip {' '.join(args)}\n{text}\n(exit {out.returncode})")
    return out


def build_env(spec: EnvSpec, requirements: str | None = None, *, cache_root: Path | None = None,
              log_to: object = None) -> ContainerEnv:
    """Build (or reuse) the stand-in for ``spec`` and install ``requirements`` (a requirements.txt text) as the
    container would: ``pip install -r requirements.txt`` on top of the preinstalled packages, then ``pip check``.

    A failed image layer raises RuntimeError with pip's output; a failed requirements install does not raise:
    it is recorded (``install_log``) for the test to assert on, like a container that fails to start.
    """
    import fcntl

    requirements = requirements or ""
    root = cache_root or default_cache_root()
    final = root / f"{spec.name}-{spec.key(requirements)}"
    root.mkdir(parents=True, exist_ok=True)
    # one builder at a time per environment: parallel test runs share the cache
    with open(root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(spec, requirements, final)


def _cached(spec: EnvSpec, final: Path) -> ContainerEnv | None:
    meta_path = final / "lensa_env.json"
    if not (meta_path.is_file() and (final / "pyvenv.cfg").is_file()):
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return ContainerEnv(path=final, spec=spec, install_log=meta["install_log"], pip_check=meta["pip_check"],
                        pip_check_ok=meta["pip_check_ok"])


def _build_locked(spec: EnvSpec, requirements: str, final: Path) -> ContainerEnv:
    cached = _cached(spec, final)
    if cached is not None:
        return cached
    python = find_python(spec.python)
    building = final.with_name(f"{final.name}.building")
    if building.exists():
        shutil.rmtree(building)
    subprocess.run([str(python), "-m", "venv", str(building)], check=True, capture_output=True)
    env_python = building / "bin" / "python"
    log: list[str] = []
    _pip(env_python, ["install", "-q", "--upgrade", "pip"], log)
    # the image's own layer: what its Dockerfile or lock file installed
    layer = [f"{name}=={version}" for name, version in spec.packages]
    if layer:
        out = _pip(env_python, ["install", "-q", *layer], log)
        if out.returncode != 0:
            raise RuntimeError(f"could not build the stand-in for {spec.name}:\n{log[-1]}")
    install_log = ""
    if requirements.strip():
        req = building / "requirements.txt"
        req.write_text(requirements, encoding="utf-8")
        # the container's step, verbatim: pip install -r requirements.txt
        _pip(env_python, ["install", "-r", str(req)], log)
        install_log = log[-1]
    check = _pip(env_python, ["check"], log)
    check_text = log[-1]
    meta = {"spec": attrs.asdict(spec), "requirements": requirements, "install_log": install_log,
            "pip_check": check_text, "pip_check_ok": check.returncode == 0, "python": str(python)}
    (building / "lensa_env.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (building / "build.log").write_text("\n\n".join(log), encoding="utf-8")
    # the venv's scripts name their own folder; the env is used through `python -m`, which does not care,
    # but pyvenv.cfg's prompt and the activate scripts keep the .building name: harmless
    if final.exists():
        shutil.rmtree(final)
    os.replace(building, final)
    return ContainerEnv(path=final, spec=spec, install_log=install_log, pip_check=check_text,
                        pip_check_ok=check.returncode == 0)


def _main(argv: Sequence[str]) -> int:
    from ..backends.images import IMAGES
    from ..stack import requirements

    names = {i.name: i for i in IMAGES}
    if not argv or argv[0] not in names:
        print(f"usage: python -m lensa_for_all.testing.container_env IMAGE  (one of {', '.join(names)})")
        return 2
    env = build_env(EnvSpec.for_image(names[argv[0]]), "\n".join(requirements()) + "\n")
    print(f"{env.path}\n{env.install_log}\n{env.pip_check}")
    return 0 if env.pip_check_ok else 1


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
