"""Model families: what differs between Stable Diffusion 1.x/2.x and SDXL, kept in one place.

The training loop, the exports and :class:`~lensa_for_all.AvatarModel` ask a :class:`ModelFamily`
which parts to load, how to turn prompts into UNet conditioning, which pipeline class renders, what
resolution the base was trained at and how kohya names the text encoders. A family is detected from
the base model's ``model_index.json`` (``TrainingConfig.model_family`` can force one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from .errors import ConfigError, ModelNotFoundError

__all__ = ["ModelFamily", "PromptEmbeddings", "SD1", "SDXL", "FAMILIES", "FAMILY_CHOICES", "family_named",
           "detect_family", "family_hint"]

FAMILY_CHOICES = ("auto", "sd1", "sdxl")


@attrs.frozen
class PromptEmbeddings:
    """Encoded prompts, one row per prompt: the cross-attention states and (SDXL) the pooled embedding."""

    hidden: Any
    pooled: Any = None

    def rows(self, index: Sequence[int]) -> PromptEmbeddings:
        return PromptEmbeddings(self.hidden[list(index)], None if self.pooled is None else self.pooled[list(index)])

    def to(self, dtype: Any) -> PromptEmbeddings:
        return PromptEmbeddings(self.hidden.to(dtype).clone(),
                                None if self.pooled is None else self.pooled.to(dtype).clone())


class ModelFamily:
    """One family of base models; subclasses say what differs."""

    name: ClassVar[str]
    label: ClassVar[str]
    pipeline_class_name: ClassVar[str]
    default_resolution: ClassVar[int]
    # (component, tokenizer) pairs, in the order the pipeline concatenates their outputs
    text_encoders: ClassVar[tuple[tuple[str, str], ...]]
    # component -> transformers class
    text_encoder_classes: ClassVar[Mapping[str, str]]
    # component -> kohya key prefix
    kohya_text_encoder_prefixes: ClassVar[Mapping[str, str]]
    # constructor arguments a pipeline built from parts needs besides the model parts
    pipeline_extras: ClassVar[Mapping[str, Any]] = {}
    # why a full fine-tune is refused (None: it is supported)
    full_fine_tune_refusal: ClassVar[str | None] = None
    # whether the base VAE overflows in float16 (then TrainingConfig.fp16_vae encodes the latents)
    vae_overflows_in_fp16: ClassVar[bool] = False
    # UNet work per latent pixel relative to SD 1.5's (the cost estimate scales its SD 1.5 speeds by it)
    unet_cost_factor: ClassVar[float] = 1.0
    # GPU memory a LoRA run at the default resolution needs, and whether that assumes gradient checkpointing
    lora_gpu_memory_gib: ClassVar[int] = 12
    lora_needs_gradient_checkpointing: ClassVar[bool] = False
    # TrainingConfig.for_subject's settings for this family, on top of the subject's preset (see docs/training.md)
    preset: ClassVar[Mapping[str, Any]] = {}

    @property
    def text_encoder_names(self) -> tuple[str, ...]:
        return tuple(encoder for encoder, _ in self.text_encoders)

    @property
    def tokenizer_names(self) -> tuple[str, ...]:
        return tuple(tokenizer for _, tokenizer in self.text_encoders)

    def __repr__(self) -> str:
        return f"ModelFamily({self.name!r})"

    @property
    def components(self) -> tuple[str, ...]:
        """What a pipeline of this family must have in its ``model_index.json``."""
        return ("unet", "vae", "scheduler", *(c for pair in self.text_encoders for c in pair))

    def loader(self, component: str) -> tuple[str, str]:
        """(module, class) whose ``from_pretrained`` loads ``component``."""
        fixed = {"unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
                 "scheduler": ("diffusers", "DDPMScheduler")}
        if component in fixed:
            return fixed[component]
        if component in self.text_encoder_classes:
            return "transformers", self.text_encoder_classes[component]
        if component in (t for _, t in self.text_encoders):
            return "transformers", "CLIPTokenizer"
        raise KeyError(f"{self.label} has no component {component!r}")

    def pipeline_class(self) -> Any:
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def tokenize(self, tokenizers: Sequence[Any], prompts: Sequence[str]) -> list[Any]:
        """Token ids per text encoder, padded to each tokenizer's window (77)."""
        return [tok(list(prompts), padding="max_length", truncation=True, max_length=tok.model_max_length,
                    return_tensors="pt").input_ids for tok in tokenizers]

    def encode(self, text_encoders: Sequence[Any], input_ids: Sequence[Any]) -> PromptEmbeddings:
        raise NotImplementedError

    def unet_conditioning(self, embeddings: PromptEmbeddings, resolution: int) -> tuple[tuple[Any, ...],
                                                                                          dict[str, Any]]:
        """The UNet's conditioning (positional and keyword arguments) after the sample and the timestep."""
        return (embeddings.hidden,), {}

    def kohya_version(self, *, v2: bool, v_prediction: bool) -> tuple[str, str]:
        """(``ss_base_model_version``, ``modelspec.architecture``) for a LoRA of this family."""
        raise NotImplementedError


class _SD1(ModelFamily):
    name = "sd1"
    label = "Stable Diffusion 1.x/2.x"
    pipeline_class_name = "StableDiffusionPipeline"
    default_resolution = 512
    text_encoders = (("text_encoder", "tokenizer"),)
    text_encoder_classes = {"text_encoder": "CLIPTextModel"}
    pipeline_extras = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    # SD 1.x/2.x kohya files name the one text encoder ``lora_te_`` (``lora_te1_`` is SDXL's first)
    kohya_text_encoder_prefixes = {"text_encoder": "lora_te_"}

    def encode(self, text_encoders: Sequence[Any], input_ids: Sequence[Any]) -> PromptEmbeddings:
        (encoder,), (ids,) = text_encoders, input_ids
        return PromptEmbeddings(encoder(ids)[0])

    def kohya_version(self, *, v2: bool, v_prediction: bool) -> tuple[str, str]:
        version = ("sd_v2" if v2 else "sd_v1") + ("_v" if v_prediction else "")
        arch = ("stable-diffusion-v2" if v2 else "stable-diffusion-v1") + ("-768-v" if v2 and v_prediction else "")
        return version, arch + "/lora"


class _SDXL(ModelFamily):
    """Two CLIP encoders whose penultimate states are concatenated; the second's projected, pooled output
    and the size/crop micro-conditioning (``add_time_ids``) go in as added conditioning."""

    name = "sdxl"
    label = "Stable Diffusion XL"
    pipeline_class_name = "StableDiffusionXLPipeline"
    default_resolution = 1024
    text_encoders = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
    text_encoder_classes = {"text_encoder": "CLIPTextModel", "text_encoder_2": "CLIPTextModelWithProjection"}
    kohya_text_encoder_prefixes = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    full_fine_tune_refusal = (
        "a full SDXL fine-tune does not fit a 24 GB GPU (2.6 B UNet parameters: about 10 GB of fp32 weights, 10 GB "
        "of gradients and 21 GB of AdamW state before activations). Use method='lora'.")
    vae_overflows_in_fp16 = True
    # an estimate, not a measurement: SDXL's UNet (2.6 B parameters against 0.86 B) keeps attention off its
    # highest-resolution level, so per latent pixel it costs about 1.5x SD 1.5's (6x in all at 1024 px against 512)
    unet_cost_factor = 1.5
    lora_gpu_memory_gib = 24
    lora_needs_gradient_checkpointing = True
    # diffusers' examples/dreambooth/README_sdxl.md: 1024 px, lr 1e-4, 500 steps on 5 photos (100 per photo),
    # gradient checkpointing to fit 24 GB; text encoders at 5e-6 as its train_dreambooth_lora_sdxl_advanced.py
    preset = {"resolution": 1024, "learning_rate": 1e-4, "gradient_checkpointing": True,
              "text_encoder_learning_rate": 5e-6}

    def encode(self, text_encoders: Sequence[Any], input_ids: Sequence[Any]) -> PromptEmbeddings:
        import torch

        hidden, pooled = [], None
        for encoder, ids in zip(text_encoders, input_ids, strict=True):
            out = encoder(ids, output_hidden_states=True)
            pooled = out[0]  # the last encoder's: CLIPTextModelWithProjection's text_embeds
            hidden.append(out.hidden_states[-2])
        return PromptEmbeddings(torch.cat(hidden, dim=-1), pooled)

    @staticmethod
    def time_ids(resolution: int, n: int, dtype: Any, device: Any) -> Any:
        """(original size, crop top-left, target size) per sample, as the pipeline passes them by default.

        Photos are cropped square to ``resolution`` before training, so all three describe the same image
        with no crop, which is what generation asks for."""
        import torch

        row = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=dtype, device=device)
        return row.expand(n, 6)

    def unet_conditioning(self, embeddings: PromptEmbeddings, resolution: int) -> tuple[tuple[Any, ...],
                                                                                          dict[str, Any]]:
        hidden = embeddings.hidden
        return (hidden,), {"added_cond_kwargs": {
            "text_embeds": embeddings.pooled,
            "time_ids": self.time_ids(resolution, hidden.shape[0], hidden.dtype, hidden.device)}}

    def kohya_version(self, *, v2: bool, v_prediction: bool) -> tuple[str, str]:
        return "sdxl_base_v1-0" + ("_v" if v_prediction else ""), "stable-diffusion-xl-v1-base/lora"


SD1: ModelFamily = _SD1()
SDXL: ModelFamily = _SDXL()
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (SD1, SDXL)}


def family_named(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"Unknown model family {name!r}; use one of {', '.join(FAMILY_CHOICES)}.") from None


def detect_family(base_model: str, index: Any, forced: str = "auto") -> ModelFamily:
    """The family of a pipeline from its ``model_index.json``; raise :class:`ModelNotFoundError` if none fits."""
    if not isinstance(index, dict):
        raise ModelNotFoundError(f"{base_model}'s model_index.json is not a JSON object; the model is damaged.")
    class_name = str(index.get("_class_name", "unknown"))
    if forced != "auto":
        family = family_named(forced)
    elif "XL" in class_name or "text_encoder_2" in index:
        family = SDXL
    else:
        family = SD1
    missing = [c for c in family.components if c not in index]
    if missing:
        raise ModelNotFoundError(
            f"{base_model} is a {class_name} pipeline, not Stable Diffusion 1.x/2.x or a complete {family.label} "
            f"one (missing {missing}). Use e.g. stable-diffusion-v1-5/stable-diffusion-v1-5 or "
            "stabilityai/stable-diffusion-xl-base-1.0."
        )
    return family


def family_hint(base_model: str, revision: str | None = None, forced: str = "auto") -> ModelFamily | None:
    """The family of ``base_model`` when it can be told without the network (a local folder, or a Hub id in the
    Hugging Face cache); ``None`` otherwise. Presets and cost estimates use it; training checks for real."""
    import json
    from pathlib import Path

    if forced != "auto":
        return family_named(forced)
    index_file: Path | None = Path(base_model) / "model_index.json"
    if index_file is None or not index_file.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(base_model, "model_index.json", revision=revision)
        except Exception:  # not a valid repo id, or no cache: nothing to tell from
            return None
        index_file = Path(cached) if isinstance(cached, str) else None
    if index_file is None:
        return None
    try:
        return detect_family(base_model, json.loads(index_file.read_text(encoding="utf-8")))
    except (OSError, ValueError, ModelNotFoundError):
        return None
