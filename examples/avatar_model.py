"""Render an avatar pack from a trained model, save it, and regenerate one image from its PNG.

Runs offline on a tiny random model from ``lensa_for_all.testing`` (the images are noise by design).
For real use, point it at the folder `lensa-for-all train` wrote, or at the job's model.tar.gz:

    model = AvatarModel.load("runs/me/model")            # or "s3://my-bucket/.../output/model.tar.gz"
    pack = model.generate(model.prompt_generator(), num_images=40, seed=1234, progress=True)
    pack.save("avatars/")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lensa_for_all import AvatarModel, AvatarPack
from lensa_for_all.testing import make_tiny_sd


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lensa-avatars-"))
    model = AvatarModel.load(make_tiny_sd(work / "tiny-sd"))  # device and precision chosen for this machine
    print(model, "default size", model.default_size)

    gen = model.prompt_generator(styles=["fantasy", "painting"])  # the model's token and class
    pack = model.generate(gen, num_images=4, seed=1234, num_inference_steps=4)  # DPM++ 2M Karras by default
    paths = pack.save(work / "avatars")  # PNGs with A1111 metadata, avatars.json, contact_sheet.jpg
    for avatar, path in zip(pack, paths, strict=True):
        print(f"{path.name}: seed {avatar.seed}, {avatar.scheduler}, {avatar.prompt[:60]}...")
    print("contact sheet:", work / "avatars" / "contact_sheet.jpg")

    # any image comes back bit-identically from its own metadata
    again = model.regenerate(paths[2])
    same = np.array_equal(np.asarray(again.image), np.asarray(pack[2].image))
    print("regenerated identically:", same)

    # other samplers and settings, diffusers-style keyword names
    (euler,) = model.generate("portrait of ohwx person, soft light", scheduler="euler_a", guidance_scale=6.0,
                              num_inference_steps=4, seed=7)
    print(euler.a1111_parameters())

    # a pack read back from disk
    print(AvatarPack.load(work / "avatars"))


if __name__ == "__main__":
    main()
