"""The documentation site: every page in the nav, every public class documented, examples that parse,
figures in the guides that match the code, and a strict MkDocs build."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lensa_for_all

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
DIRECTIVE = re.compile(r"^::: +([\w.]+)", re.M)


def _mkdocs_config() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)


def _directives() -> dict[str, Path]:
    found = {}
    for page in (DOCS / "api").glob("*.md"):
        for target in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            found[target] = page
    return found


def _import_target(path: str) -> Any:
    """Import ``a.b.C.meth`` by trying the longest importable module prefix."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def test_nav_and_docs_folder_agree() -> None:
    nav = _nav_pages(_mkdocs_config()["nav"])
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"nav lists pages that do not exist: {missing}"
    on_disk = {str(p.relative_to(DOCS)) for p in _pages()}
    assert on_disk == set(nav), f"pages not in the nav: {sorted(on_disk - set(nav))}"


def test_the_required_guides_are_in_the_nav() -> None:
    nav = set(_nav_pages(_mkdocs_config()["nav"]))
    for page in ("index.md", "getting-started.md", "photos.md", "training.md", "training-tips.md",
                 "sagemaker.md", "generating.md", "prompts.md", "faq.md", "testing.md", "api/index.md"):
        assert page in nav, page


def test_every_directive_names_a_real_object() -> None:
    directives = _directives()
    assert len(directives) >= 20
    for target in directives:
        obj = _import_target(target)
        assert obj is not None, target


def test_every_public_name_has_an_api_entry() -> None:
    documented = {target.rsplit(".", 1)[-1] for target in _directives()}
    errors_page = "lensa_for_all.errors" in _directives()
    for name in lensa_for_all.__all__:
        if name == "__version__":
            continue
        if name in lensa_for_all.errors.__all__:
            assert errors_page, "docs/api/errors.md must render lensa_for_all.errors"
            continue
        assert name in documented, f"{name} is public (lensa_for_all.__all__) but has no ::: entry in docs/api/"
    for name in lensa_for_all.testing.__all__:
        if callable(getattr(lensa_for_all.testing, name)):
            assert name in documented, f"lensa_for_all.testing.{name} has no ::: entry in docs/api/testing.md"


def test_python_examples_in_the_docs_parse() -> None:
    blocks = 0
    for page in _pages():
        for match in FENCE.finditer(page.read_text(encoding="utf-8")):
            if match.group("lang") != "python":
                continue
            body = "\n".join(line[len(match.group("indent")):] for line in match.group("body").splitlines())
            try:
                ast.parse(body)
            except SyntaxError as exc:
                pytest.fail(f"{page.relative_to(ROOT)}: a python example does not parse: {exc}\n{body}")
            blocks += 1
    assert blocks >= 30


def test_command_lines_in_the_docs_parse(capsys: pytest.CaptureFixture[str]) -> None:
    """Every ``lensa-for-all ...`` line in a shell example is accepted by the real argument parser."""
    import shlex

    from lensa_for_all.cli.main import build_parser

    parser = build_parser()
    checked = 0
    for page in _pages():
        for match in FENCE.finditer(page.read_text(encoding="utf-8")):
            if match.group("lang") not in ("bash", "sh", "shell", "console", ""):
                continue
            for line in match.group("body").splitlines():
                line = line.strip().removeprefix("$ ")
                if not line.startswith("lensa-for-all ") or re.search(r"\[|COMMAND|\.\.\.|<", line):
                    continue  # not a command, or a usage synopsis
                argv = shlex.split(line, comments=True)[1:]
                for stop in (">", "|", "&&"):
                    argv = argv[: argv.index(stop)] if stop in argv else argv
                try:
                    args = parser.parse_args(argv)
                except SystemExit:
                    pytest.fail(f"{page.relative_to(ROOT)}: `{line}` is refused: {capsys.readouterr().err}")
                assert getattr(args, "func", None), line
                checked += 1
    assert checked >= 15


def test_relative_links_point_at_pages() -> None:
    link = re.compile(r"\]\(([^)#\s]+\.md)(#[\w-]+)?\)")
    for page in _pages():
        for target, _ in link.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).resolve().is_file(), f"{page.relative_to(ROOT)} links to {target}"


def test_style_names_in_the_docs_exist() -> None:
    """Every ``styles=[...]`` and ``--styles ...`` example names a style or group of the catalogue."""
    import shlex

    from lensa_for_all import PromptGenerator

    generator = PromptGenerator(token="ohwx", subject_class="person")
    checked = 0
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        names = [n for group in re.findall(r"styles=\[([^\]]*)\]", text) for n in re.findall(r'"([^"]+)"', group)]
        for args in re.findall(r"--styles ((?:[^`|\n-]|-(?!-))+)", text):
            names += [n for n in shlex.split(args) if re.fullmatch(r"[a-z0-9][a-z0-9 _-]*", n)]  # not STYLE ...
        for name in names:
            try:
                generator.generate(n=1, styles=[name], seed=0)
            except lensa_for_all.ConfigError as exc:
                pytest.fail(f"{page.relative_to(ROOT)} uses style {name!r}: {exc}")
            checked += 1
    assert checked >= 8


def _table_rows(page: str, first_header: str) -> list[list[str]]:
    """The rows of the Markdown table in ``page`` whose first header cell is ``first_header``."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_training_tips_step_table_matches_the_presets() -> None:
    from lensa_for_all import TrainingConfig

    rows = {row[0]: row for row in _table_rows("training-tips.md", "preset")}
    presets = {"people, LoRA": ("person", "lora"), "people, full": ("person", "full"),
               "pets and objects (both methods)": ("dog", "lora")}
    assert set(rows) == set(presets)
    for label, (subject, method) in presets.items():
        config = TrainingConfig.for_subject(subject, method)
        per_photo, span, *counts = rows[label][1:]
        assert int(per_photo) == config.steps_per_photo, label
        assert span == f"{config.min_auto_steps}-{config.max_auto_steps}", label
        for photos, documented in zip((5, 12, 20), counts, strict=True):
            assert int(documented) == config.resolve_max_train_steps(photos), (label, photos)
    full_pet = TrainingConfig.for_subject("cat", "full")
    assert (full_pet.steps_per_photo, full_pet.min_auto_steps, full_pet.max_auto_steps) == (40, 200, 400)


def test_training_tips_learning_rates_and_oom_order_match_the_code() -> None:
    from lensa_for_all import TrainingConfig
    from lensa_for_all.training.loop import OOM_ADVICE

    text = (DOCS / "training-tips.md").read_text(encoding="utf-8")
    lora, full = TrainingConfig.for_subject("person", "lora"), TrainingConfig.for_subject("person", "full")
    assert (lora.learning_rate, lora.text_encoder_learning_rate) == (1e-4, 5e-5)
    assert (full.learning_rate, full.text_encoder_learning_rate) == (2e-6, 1e-6)
    assert "1e-4 (text encoder 5e-5 for people)" in text and "2e-6 (text encoder 1e-6 for people)" in text
    assert lora.lora_rank == 16 and "`lora_rank` 16" in text
    assert lora.with_prior_preservation and lora.num_class_images == 200
    assert not TrainingConfig.for_subject("dog").with_prior_preservation
    # the numbered list follows the order of the error message
    switches = ["mixed_precision=", "gradient_checkpointing=True", "use_8bit_adam=True", "method='lora'",
                "train_text_encoder=False", "a smaller resolution"]
    positions = [OOM_ADVICE.index(s) for s in switches]
    assert positions == sorted(positions)
    listed = re.findall(r"^\d\. `?(\w+)", text, re.M)
    assert listed[:5] == ["mixed_precision", "gradient_checkpointing", "use_8bit_adam", "method",
                          "train_text_encoder"]


def test_settings_named_in_the_advice_pages_exist() -> None:
    """A ``name=value`` the tips or the FAQ tell users to set is a real keyword of the class it goes to."""
    import inspect

    from lensa_for_all import AvatarModel, SageMakerBackend, TrainingConfig

    known = set(TrainingConfig.field_names())
    for func in (AvatarModel.load, AvatarModel.generate, SageMakerBackend.__init__):
        known |= set(inspect.signature(func).parameters)
    for page in ("training-tips.md", "faq.md", "getting-started.md"):
        text = (DOCS / page).read_text(encoding="utf-8")
        named = set(re.findall(r"`([a-z][a-z0-9_]*)=", text))
        named |= set(re.findall(r"^\s+([a-z][a-z0-9_]*)=", text, re.M))  # keyword lines of code examples
        assert named, page
        assert named <= known, f"{page} names settings that do not exist: {sorted(named - known)}"


def test_docs_extra_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"]
    names = {re.split(r"[\[<>=]", req)[0] for req in extras["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= names
    assert names <= {re.split(r"[\[<>=]", req)[0] for req in extras["dev"]}, "CI installs dev: it needs the docs tools"


def test_sphinx_roles_become_optional_links() -> None:
    griffe = pytest.importorskip("griffe")
    extensions = griffe.load_extensions(str(DOCS / "_ext" / "sphinx_roles.py") + ":SphinxRoles")
    module = griffe.load("lensa_for_all.pipeline", search_paths=[str(ROOT / "src")], extensions=extensions)
    text = module["Pipeline"].docstring.value
    assert ":class:" not in text
    assert '<autoref identifier="lensa_for_all.photos.PhotoSet" optional><code>PhotoSet</code></autoref>' in text
    # ``~a.b.C`` shows only ``C``; a dotted target keeps its path as the identifier
    assert ('<autoref identifier="lensa_for_all.training.backend.Backend" optional><code>Backend</code></autoref>'
            in text)


def test_commonmark_list_indentation_renders_as_on_github() -> None:
    markdown = pytest.importorskip("markdown")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from commonmark_lists import widen_list_indentation
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    source = (
        "1. **Upload.** under one prefix:\n\n"
        "   | key | what |\n   | --- | --- |\n   | `a` | b |\n\n"
        "   More about uploads.\n"
        "2. **Job.** with:\n   - a container;\n   - tags.\n\n"
        "```text\n1. not a list\n   left alone\n```\n\n"
        "- a bullet\n\n  ```python\n  x = 1\n  ```\n"
    )
    widened = widen_list_indentation(source)
    assert "```text\n1. not a list\n   left alone\n```" in widened  # fenced code is copied as is
    html = markdown.markdown(widened, extensions=["tables", "pymdownx.superfences"])
    assert html.count("<ol>") == 1 and html.count("<li>") == 5, html  # 2 steps, 2 nested bullets, 1 bullet
    assert html.index("<table>") < html.index("</li>")  # the table stays inside step 1
    assert "2. " not in html.replace("1. not a list", "")  # step 2 is an item, not text
    plain = markdown.markdown(source, extensions=["tables", "pymdownx.superfences"])
    assert plain.count("<li>") < 5  # what Python-Markdown does without the hook


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    assert mkdocs, "the mkdocs command is not on PATH"
    site = tmp_path / "site"
    proc = subprocess.run([mkdocs, "build", "--strict", "-f", str(MKDOCS_YML), "-d", str(site)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("index.html", "getting-started/index.html", "faq/index.html", "training-tips/index.html"):
        assert (site / name).is_file(), name
    api = (site / "api" / "pipeline" / "index.html").read_text(encoding="utf-8")
    assert 'id="lensa_for_all.pipeline.Pipeline.run"' in api
    assert 'href="../photos/#lensa_for_all.photos.PhotoSet"' in api  # a Sphinx role became a link
    for html in (site / "api").rglob("*.html"):
        assert ":class:" not in html.read_text(encoding="utf-8"), html
    sagemaker = (site / "sagemaker" / "index.html").read_text(encoding="utf-8")
    steps = sagemaker[sagemaker.index('id="what-happens-when-you-call-run"'):sagemaker.index('id="why-plain-boto3')]
    assert steps.count("<ol>") == 1 and "\n4. " not in steps, "the numbered steps fell apart"
    errors = (site / "api" / "errors" / "index.html").read_text(encoding="utf-8")
    for name in lensa_for_all.errors.__all__:
        assert f'id="lensa_for_all.errors.{name}"' in errors, name

