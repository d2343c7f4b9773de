"""The whole path, photos to avatar pack, with :class:`lensa_for_all.Pipeline`; runs offline on CPU.

Real use (a GPU, the real base model from the Hugging Face Hub)::

    from lensa_for_all import Pipeline
    result = Pipeline.from_folder("photos/me", subject_class="person").run(
        num_images=40, styles=["fantasy", "professional headshot"], out_dir="avatars/")
    # the progress display printed result.summary(); the result is also data:
    print("contact sheet:", result.contact_sheet, "| stage seconds:", dict(result.durations))

Here a tiny random-weight model and the sample photos that ship with the package stand in, so the
script runs anywhere in a minute or two; the avatars are noise. Run it twice: the second run reuses
every stage from the run folder's state.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from lensa_for_all import Pipeline
from lensa_for_all.demo import sample_photos
from lensa_for_all.testing import make_tiny_sd


def main(work: Path) -> None:
    base_model = make_tiny_sd(work / "tiny-sd", "tiny").resolve()  # stands in for the SD 1.5 Hub id
    photos = work / "me"
    photos.mkdir(parents=True, exist_ok=True)
    for src in sample_photos():
        (photos / src.name).write_bytes(src.read_bytes())

    pipeline = Pipeline.from_folder(
        photos, subject_class="person", backend="local", method="lora",
        base_model=str(base_model), steps=4,
        # TrainingConfig fields scaled down for the 64 px tiny model
        resolution=64, lora_rank=4, mixed_precision="no", with_prior_preservation=False,
    )
    result = pipeline.run(num_images=3, styles=["fantasy"], out_dir=work / "avatars", seed=0,
                          num_inference_steps=4)
    # the progress display printed result.summary(); the result is also data:
    print("contact sheet:", result.contact_sheet, "| stage seconds:", dict(result.durations))

    # the same call again (or Pipeline.resume(run_dir)) continues from the state: here nothing is left to do
    again = Pipeline.resume(result.run_dir, progress=False)
    print("reused on the second run:", ", ".join(again.reused))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
