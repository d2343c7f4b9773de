"""A small byte-level BPE trainer, so test tokenizers are generated here instead of downloaded."""

from __future__ import annotations

import collections
from functools import lru_cache

# Words a prompt in our tests and demo uses; merges learnt from them keep token counts realistic.
CORPUS = """
a photo of ohwx sks zwx person man woman dog cat pet portrait headshot close up upper body full body
professional studio lighting fantasy cyberpunk anime oil painting watercolor digital art by artstation
trending on artstation highly detailed intricate elegant sharp focus illustration concept art smooth
cinematic octane render unreal engine 8k 4k hdr dramatic light soft light bokeh background neon city
knight armor wizard astronaut space nebula forest castle princess warrior samurai pirate superhero
comic pop art pixar 3d render clay vintage film grain polaroid black and white sketch pencil charcoal
blurry ugly deformed disfigured low quality bad anatomy extra limbs watermark text signature cropped
beautiful handsome smiling serious looking at camera wearing suit dress hat glasses in the on with
""".split()


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def train_bpe(words: list[str], num_merges: int, *, end_of_word: str = "") -> list[tuple[str, str]]:
    """Learn ``num_merges`` merges over ``words`` (byte-unicode symbols, ``end_of_word`` on the last)."""
    b2u = bytes_to_unicode()
    counts = collections.Counter(words)
    seqs: dict[tuple[str, ...], int] = {}
    for word, c in counts.items():
        symbols = [b2u[b] for b in word.encode("utf-8")]
        if end_of_word:
            symbols[-1] = symbols[-1] + end_of_word
        seqs[tuple(symbols)] = seqs.get(tuple(symbols), 0) + c
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for seq, c in seqs.items():
            for a, b in zip(seq, seq[1:], strict=False):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new: dict[tuple[str, ...], int] = {}
        for seq, c in seqs.items():
            out: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        seqs = new
    return merges
