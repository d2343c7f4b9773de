"""Pipeline.run and Pipeline.plan take the same arguments, checked in one place (RunRequest); the avatar loop
renders only the indices an interrupted run left."""

from __future__ import annotations

from pathlib import Path

import pytest

from lensa_for_all import Pipeline
from lensa_for_all.errors import ConfigError
from lensa_for_all.pipeline.rendering import missing_runs
from lensa_for_all.pipeline.request import MAX_SEED, RunRequest
from lensa_for_all.testing.photos import make_photos


def _build(num_images: int = 4, styles: list[str] | None = None, out_dir: str | Path | None = None, *,
           seed: int | None = None, magic: bool | str = False, batch_size: int | None = None,
           **generation: object) -> RunRequest:
    return RunRequest.build(num_images, styles, out_dir, seed=seed, magic=magic, batch_size=batch_size,
                            generation=generation)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"sampler": "euler"}, r"unknown setting\(s\) \['sampler'\]; generation settings are .*guidance_scale"),
    ({"num_images": 0}, "num_images must be at least 1, not 0"),
    ({"seed": -1}, f"seed must be between 0 and {MAX_SEED - 1}, not -1"),
    ({"seed": MAX_SEED}, f"not {MAX_SEED}"),
])
def test_run_and_plan_refuse_the_same_bad_arguments_with_the_same_message(
        tmp_path: Path, arguments: dict[str, object], message: str) -> None:
    photos = make_photos(tmp_path / "me", 4)
    pipeline = Pipeline(photos, run_dir=tmp_path / "run", progress=False)
    for call in (pipeline.plan, pipeline.run):
        with pytest.raises(ConfigError, match=message):
            call(**arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_recorded_arguments_rebuild_the_same_request(tmp_path: Path) -> None:
    """What the state records is what Pipeline.resume passes back to run: it must mean the same run."""
    request = _build(3, ["fantasy", "anime"], tmp_path / "out", seed=7, magic="auto", batch_size=2,
                     num_inference_steps=5, device="cpu")
    recorded = request.arguments(tmp_path / "out")
    assert recorded == {"num_images": 3, "styles": ["fantasy", "anime"], "out_dir": str((tmp_path / "out").resolve()),
                        "seed": 7, "magic": "auto", "num_inference_steps": 5, "device": "cpu", "batch_size": 2}
    again = _build(**recorded)  # type: ignore[arg-type]
    assert again == request
    assert (again.batch_size, again.load_options, again.render_options) == (2, {"device": "cpu"},
                                                                            {"num_inference_steps": 5})


def test_unset_settings_are_not_passed_on() -> None:
    request = _build(2, None, None, dtype=None, guidance_scale=None, width=64)
    assert request.styles is None and request.out_dir is None and request.batch_size is None
    assert request.load_options == {} and request.render_options == {"width": 64}
    assert request.arguments(Path("out"))["styles"] is None


def test_plan_is_made_once_for_the_run_that_follows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI plans, then runs the same arguments: the checks (some of them AWS calls) run once."""
    made: list[dict[str, object]] = []

    def make_plan(pipeline: Pipeline, **kwargs: object) -> object:
        made.append(kwargs)
        return object()

    monkeypatch.setattr("lensa_for_all.pipeline.plan.make_plan", make_plan)
    pipeline = Pipeline(tmp_path / "me", run_dir=tmp_path / "run", progress=False)
    first = pipeline.plan(2, ["fantasy"], tmp_path / "out", seed=3)
    assert pipeline.plan(2, ("fantasy",), str(tmp_path / "out"), seed=3) is first  # the same request
    assert len(made) == 1
    assert made[0]["styles"] == ("fantasy",) and made[0]["out_dir"] == tmp_path / "out"
    assert made[0]["run_dir"] == (tmp_path / "run").resolve()
    assert pipeline.plan(2, ["fantasy"], tmp_path / "out", seed=4) is not first and len(made) == 2


@pytest.mark.parametrize(("n", "done", "runs"), [
    (4, {}, [(0, 4)]),
    (4, {0: "a", 1: "b", 2: "c", 3: "d"}, []),
    (5, {1: "b", 3: "d"}, [(0, 1), (2, 3), (4, 5)]),
    (3, {0: "a"}, [(1, 3)]),
])
def test_only_the_missing_indices_are_rendered_in_contiguous_runs(n: int, done: dict[int, str],
                                                                  runs: list[tuple[int, int]]) -> None:
    assert list(missing_runs(n, done)) == runs
