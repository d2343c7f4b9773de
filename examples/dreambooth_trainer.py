"""Train a LoRA with DreamBoothTrainer on synthetic photos and a tiny random model, then generate.

Runs offline on a CPU in well under a minute: the model and photos come from lensa_for_all.testing,
so the "avatar" is noise. Real use (a GPU, the real SD 1.5 weights):

    photos = PhotoSet.from_folder("photos/me", subject_class="person")
    result = DreamBoothTrainer(TrainingConfig.for_subject("person", "lora")).train(photos, output_dir="models/me")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lensa_for_all import DreamBoothTrainer, LocalBackend, TrainingConfig
from lensa_for_all.testing import make_photos, make_tiny_sd


def main() -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = make_tiny_sd(root / "tiny-sd", "tiny")  # real use: the default stable-diffusion-v1-5 id
        photos = root / "photos"
        make_photos(photos, 4, size=(96, 96), format="png")
        config = TrainingConfig.for_subject(
            "person", "lora", base_model=str(base), resolution=64, max_train_steps=4,
            num_class_images=2, class_image_inference_steps=1, mixed_precision="no",
        )
        # keep this demo's class images out of the shared cache (~/.cache/lensa_for_all/class_images)
        trainer = DreamBoothTrainer(config, backend=LocalBackend(env={"LENSA_CLASS_IMAGE_CACHE": str(root / "cache")}))
        result = trainer.train(photos, output_dir=root / "model",
                               progress=lambda p: print(f"  {p.stage} {p.step}/{p.total_steps}"))
        print("artifacts:", sorted(p.name for p in result.output_dir.iterdir()))
        print("final loss:", result.metrics["final_loss"])

        pipe = StableDiffusionPipeline.from_pretrained(base)
        pipe.load_lora_weights(result.output_dir)
        image = pipe("a photo of ohwx person", num_inference_steps=2, height=64, width=64,
                     generator=torch.Generator().manual_seed(0)).images[0]
        print("generated", image.size)


if __name__ == "__main__":
    main()
