"""Ctrl-C during generation: no duplicate avatar, and a rerun into the same folder continues the pack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lensa_for_all.generation import AvatarModel
from lensa_for_all.generation.pack import INDEX_NAME, PackWriter

STEPS = 2


@pytest.fixture(scope="module")
def model(tiny_sd: Path) -> AvatarModel:
    return AvatarModel.load(tiny_sd)


class Killed(BaseException):
    """The process ending abruptly (nothing after this point runs, not even ``finally`` clean-ups we own)."""


def _stop_after(n_images: int) -> Any:
    calls = {"n": 0}

    def callback(pipe: Any, step: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == n_images * STEPS + 1:  # the next image has just started
            raise KeyboardInterrupt
        return kwargs

    return callback


def _generate(model: AvatarModel, out: Path, **kwargs: Any) -> Any:
    return model.generate(model.prompt_generator(), 4, num_inference_steps=STEPS, batch_size=1, out_dir=out,
                          **kwargs)


def test_a_rerun_without_a_seed_continues_the_interrupted_pack(model: AvatarModel, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _generate(model, out, callback_on_step_end=_stop_after(2))
    assert first.interrupted and len(first) == 2
    assert json.loads((out / INDEX_NAME).read_text())["pending"]["count"] == 4
    second = _generate(model, out)  # no seed: the pending pack's seed is reused
    assert not second.interrupted and len(second) == 4
    assert [a.seed for a in second] == [first[0].seed + i for i in range(4)]
    assert [a.image.tobytes() for a in second[:2]] == [a.image.tobytes() for a in first]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 4 and pngs == sorted(f"{i:03d}-{a.style}-{a.seed}.png" for i, a in enumerate(second))
    index = json.loads((out / INDEX_NAME).read_text())
    assert "pending" not in index and sorted(e["file"] for e in index["avatars"]) == pngs
    third = _generate(model, out)  # the pack is complete: a new run is a new pack, beside it
    assert third[0].seed != second[0].seed and len(list(out.glob("*.png"))) == 8


def test_ctrl_c_between_the_png_and_its_record_leaves_no_duplicate(model: AvatarModel, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    real = PackWriter._write_index
    calls = {"n": 0}

    def write_index(self: PackWriter, sheet: str | None = None) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # begin(), avatar 0, then avatar 1's PNG is on disk but not in the index
            raise Killed  # the process dies here, as with a second Ctrl-C or a kill
        real(self, sheet)

    monkeypatch.setattr(PackWriter, "_write_index", write_index)
    with pytest.raises(Killed):
        _generate(model, out, seed=7)
    monkeypatch.setattr(PackWriter, "_write_index", real)
    assert len(list(out.glob("*.png"))) == 2 and len(json.loads((out / INDEX_NAME).read_text())["avatars"]) == 1
    pack = _generate(model, out, seed=7)
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(pack) == 4 and len(names) == 4 and not [n for n in names if n.endswith("-2.png")]
    assert sorted(e["file"] for e in json.loads((out / INDEX_NAME).read_text())["avatars"]) == names


def test_a_truncated_unrecorded_png_is_rendered_again_under_its_own_name(model: AvatarModel, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _generate(model, out, seed=3, callback_on_step_end=_stop_after(2))
    victim = out / f"001-{first[1].style}-{first[1].seed}.png"
    victim.write_bytes(victim.read_bytes()[:200])
    pack = _generate(model, out, seed=3)
    assert len(pack) == 4 and victim.is_file() and len(list(out.glob("*.png"))) == 4
    from PIL import Image

    with Image.open(victim) as im:
        im.load()
    assert pack[1].image.tobytes() == first[1].image.tobytes()
