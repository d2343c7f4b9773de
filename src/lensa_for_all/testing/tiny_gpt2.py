"""A tiny random GPT-2 with a locally trained byte-level BPE tokenizer, standing in for MagicPrompt."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .bpe import CORPUS, bytes_to_unicode, train_bpe

__all__ = ["make_tiny_gpt2"]


def make_tiny_gpt2(path: str | os.PathLike[str], *, seed: int = 0, num_merges: int = 300) -> Path:
    """Build a GPT-2 folder loadable by ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained``.

    Random weights: its continuations are word salad from the test corpus, which is exactly what
    MagicPrompt's post-processing has to survive.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    tmp = path.with_name(f".{path.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    b2u = bytes_to_unicode()
    # GPT-2 marks a leading space with the byte-unicode of " " ("Ġ") instead of CLIP's "</w>".
    words = [" " + w for w in CORPUS] + CORPUS + [",", ".", " ,"]
    merges = train_bpe(words, num_merges)
    vocab_list = list(b2u.values()) + ["".join(m) for m in merges] + ["<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
    )
    tokenizer = GPT2Tokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"))
    tokenizer.save_pretrained(tmp)
    torch.manual_seed(seed)
    eos = vocab["<|endoftext|>"]
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=eos, eos_token_id=eos)
    GPT2LMHeadModel(cfg).save_pretrained(tmp, safe_serialization=True)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
