"""Prompts for an avatar pack: curated styles, a user's own style file, and MagicPrompt expansion.

Runs offline: the tiny random GPT-2 from ``lensa_for_all.testing`` stands in for MagicPrompt (its
expansions are word salad, which the post-processing mostly throws away). For real use:

    gen = PromptGenerator(token="ohwx", subject_class="woman", tokenizer="runs/me/model")
    prompts = gen.generate(n=40, styles=["fantasy", "cyberpunk"], magic=True, seed=7)
    # magic=True downloads Gustavosta/MagicPrompt-Stable-Diffusion once (about 500 MB)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from lensa_for_all import PromptGenerator
from lensa_for_all.testing import make_tiny_gpt2, make_tiny_sd


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lensa-prompts-"))
    sd = make_tiny_sd(work / "tiny-sd")  # only its CLIP tokenizer is used, to count tokens
    gpt2 = make_tiny_gpt2(work / "tiny-gpt2")

    gen = PromptGenerator(token="ohwx", subject_class="woman", tokenizer=sd)
    print(f"{len(gen.styles())} styles in {len(gen.catalogue.groups())} groups: {', '.join(gen.catalogue.groups())}")
    for p in gen.generate(n=4, styles=["fantasy", "cyberpunk"], seed=7):
        print(f"[{p.style}] {p.text}\n    negative: {p.negative[:70]}...")

    # a pet gets the pet templates and negatives
    for p in PromptGenerator(token="zwx", subject_class="dog").generate(n=2, styles=["anime"], seed=1):
        print(f"[{p.style}] {p.text}")

    # your own styles, added to the catalogue
    mine = work / "my_styles.json"
    mine.write_text(json.dumps({"styles": [{
        "name": "lego", "group": "toys", "person": "{subject} as a lego minifigure, studio photo",
        "pet": "{subject} as a lego figure, studio photo", "negative": "blurry",
        "settings": {"guidance_scale": 6.5}}]}))
    (lego,) = PromptGenerator("ohwx", "man", extra_catalogue=mine).generate(1, styles=["lego"])
    print(lego)

    # MagicPrompt: the subject stays exactly once, the result fits CLIP's 77 tokens
    magic = PromptGenerator("ohwx", "woman", tokenizer=sd, magic_model=str(gpt2))
    for p in magic.generate(n=2, magic=True, seed=3):
        print(f"magic ({magic.count_tokens(p.text)} tokens): {p.text}")

    # offline with no MagicPrompt model: "auto" falls back to the templates with a warning
    fallback = PromptGenerator("ohwx", "woman", magic_model="nobody/not-cached")
    print(fallback.generate(n=1, magic="auto", seed=0)[0].text)


if __name__ == "__main__":
    main()
