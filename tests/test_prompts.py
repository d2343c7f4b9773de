"""Style catalogue, PromptGenerator, token fitting, MagicPrompt post-processing and the `prompts` CLI."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lensa_for_all.errors import ConfigError, MagicPromptUnavailable
from lensa_for_all.prompts import MagicPrompt, Prompt, PromptGenerator, StyleCatalogue
from lensa_for_all.prompts.catalogue import SUBJECT_PLACEHOLDER, Style
from lensa_for_all.prompts.magic import clean_continuation
from lensa_for_all.prompts.tokens import count_subject, fit_prompt, token_counter_for


@pytest.fixture(scope="module")
def clip_count(tiny_sd: Path) -> Any:
    return token_counter_for(tiny_sd)


# -- catalogue ---------------------------------------------------------------------------------------
def test_builtin_catalogue_is_valid() -> None:
    cat = StyleCatalogue.default()
    assert len(cat) >= 40
    groups = cat.groups()
    for g in ("portrait photography", "professional headshot", "fantasy", "sci-fi", "anime", "painting", "3d",
              "pop art"):
        assert g in groups
    assert all(sum(s.group == g for s in cat) >= 3 for g in groups)
    for s in cat:
        for kind in ("person", "pet"):
            assert s.template(kind).count(SUBJECT_PLACEHOLDER) == 1, (s.name, kind)
            neg = cat.negative_for(s, kind)
            assert len(neg.split(",")) >= 5, s.name
        assert s.person != s.pet or "person" not in s.person
        assert 5 <= s.settings["guidance_scale"] <= 9
    assert "human" in cat.negative_base["pet"]
    assert "extra fingers" in cat.negative_base["person"]


@pytest.mark.parametrize("template", ["portrait of a man", "{subject} and {subject}", "{subject} {weird}"])
def test_style_template_must_hold_subject_once(template: str) -> None:
    with pytest.raises(ConfigError, match="subject|braces"):
        Style(name="x", group="g", person=template, pet="{subject}")


def test_user_catalogue_file_adds_and_replaces(tmp_path: Path) -> None:
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"styles": [
        {"name": "lego", "group": "toys", "person": "{subject} as a lego minifigure", "pet": "{subject} lego",
         "negative": "blurry", "settings": {"guidance_scale": 6}},
        {"name": "cyberpunk", "group": "sci-fi", "person": "{subject}, neon", "pet": "{subject}, neon"},
    ]}))
    gen = PromptGenerator("ohwx", "woman", extra_catalogue=f)
    assert "lego" in gen.catalogue and "toys" in gen.catalogue.groups()
    assert gen.catalogue["cyberpunk"].person == "{subject}, neon"
    assert len(gen.catalogue) == len(StyleCatalogue.default()) + 1
    (p,) = gen.generate(1, styles=["lego"])
    assert p.text == "ohwx woman as a lego minifigure" and p.settings == {"guidance_scale": 6}
    assert p.negative.startswith("blurry, ")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"styles": [{"name": "x", "group": "g", "person": "no subject", "pet": "{subject}"}]}))
    with pytest.raises(ConfigError, match="exactly"):
        StyleCatalogue.from_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        StyleCatalogue.from_file(tmp_path / "missing.json")


# -- generator ---------------------------------------------------------------------------------------
def test_generator_spreads_styles_and_keeps_subject_once(tiny_sd: Path, clip_count: Any) -> None:
    gen = PromptGenerator("ohwx", "man", tokenizer=tiny_sd)
    prompts = gen.generate(40, seed=7)
    assert len(prompts) == 40 and all(isinstance(p, Prompt) for p in prompts)
    assert len({p.style for p in prompts}) == 40  # 40 <= catalogue size: no style twice
    for p in prompts:
        assert count_subject(p.text, "ohwx man") == 1
        assert p.text.count("ohwx") == 1
        assert clip_count(p.text) <= 77
        assert p.negative and clip_count(p.negative) <= 77
        assert p.negative.startswith(gen.catalogue[p.style or ""].negative)
    assert [p.text for p in gen.generate(40, seed=7)] == [p.text for p in prompts]
    assert [p.text for p in gen.generate(40, seed=8)] != [p.text for p in prompts]


def test_generator_by_group_and_pets() -> None:
    gen = PromptGenerator("zwx", "dog")
    assert gen.subject_kind == "pet"
    prompts = gen.generate(9, styles=["fantasy", "cyberpunk"], seed=1)
    names = Counter(p.style for p in prompts)
    fantasy = {s.name for s in gen.catalogue if s.group == "fantasy"}
    assert set(names) <= fantasy | {"cyberpunk"}
    assert max(names.values()) - min(names.values()) <= 1  # evenly spread
    assert all("zwx dog" in p.text and "human" in p.negative for p in prompts)
    with pytest.raises(ConfigError, match="Unknown style or group 'cyberpnk'"):
        gen.generate(3, styles=["cyberpnk"])
    with pytest.raises(ConfigError, match="token"):
        PromptGenerator("two words", "person")


def test_fit_prompt_trims_fragments_never_the_subject(clip_count: Any) -> None:
    long = "photo of ohwx person, " + ", ".join(f"detail number {i} with extra words" for i in range(30))
    fitted = fit_prompt(long, "ohwx person", clip_count)
    assert clip_count(long) > 77 >= clip_count(fitted)
    assert fitted.startswith("photo of ohwx person, detail number 0")
    assert count_subject(fitted, "ohwx person") == 1
    with pytest.raises(ConfigError, match="longer than"):
        fit_prompt("ohwx person " + "very " * 90, "ohwx person", clip_count)


# -- MagicPrompt -------------------------------------------------------------------------------------
def test_clean_continuation_filters_junk_subject_duplicates_and_banned(clip_count: Any) -> None:
    base = "photo of ohwx dog, soft light"
    cont = (" trending on artstation, (nsfw), 8k, ohwx cat, a happy dog, soft light, https://x.y/z, "
            "beautiful!!, @someone, NUDE portrait, oil painting, qzxkwvbnmasdfghjklpoiu, highly detailed\nnext")
    out = clean_continuation(base, cont, subject="ohwx dog", counter=clip_count)
    assert out == "photo of ohwx dog, soft light, trending on artstation, 8k, beautiful, oil painting, highly detailed"


def test_clean_continuation_stops_at_the_token_limit(clip_count: Any) -> None:
    base = "photo of ohwx dog"
    cont = ", ".join(f"style word {i}" for i in range(60))
    out = clean_continuation(base, cont, subject="ohwx dog", counter=clip_count)
    assert out.startswith(base + ", style word 0") and clip_count(out) <= 77
    assert clip_count(out + ", style word 59") > 77


def test_magicprompt_on_tiny_gpt2(tiny_gpt2: Path, tiny_sd: Path, clip_count: Any) -> None:
    magic = MagicPrompt(str(tiny_gpt2), max_new_tokens=16)
    gen = PromptGenerator("ohwx", "person", tokenizer=tiny_sd, magic_model=magic)
    a = gen.generate(6, seed=3, magic=True)
    b = gen.generate(6, seed=3, magic=True)
    assert [p.text for p in a] == [p.text for p in b]
    for p in a:
        assert count_subject(p.text, "ohwx person") == 1 and p.text.count("ohwx") == 1
        assert clip_count(p.text) <= 77
        assert p.text.startswith(gen.prompt_for(p.style or "").text)
    raw1 = gen.magic_prompt.continuations(["photo of ohwx person"] * 2, seed=1)
    assert raw1 == gen.magic_prompt.continuations(["photo of ohwx person"] * 2, seed=1)
    assert raw1 != gen.magic_prompt.continuations(["photo of ohwx person"] * 2, seed=2)
    assert all(r.strip() for r in raw1)  # the model did continue; cleaning decided what to keep


class _ScriptedMagic(MagicPrompt):
    """A MagicPrompt whose 'model' writes a fixed continuation, to test the post-processing end to end."""

    def __init__(self, text: str) -> None:
        super().__init__("scripted")
        self.text = text

    def load(self) -> MagicPrompt:
        return self

    def continuations(self, prompts: Any, *, seed: int) -> list[str]:
        return [self.text for _ in prompts]


def test_magic_expansion_filters_banned_words_and_subject(tiny_sd: Path, clip_count: Any) -> None:
    magic = _ScriptedMagic(" naked, ohwx woman smiling, by greg rutkowski, sexy pose, gold jewelry, bloody")
    gen = PromptGenerator("ohwx", "woman", tokenizer=tiny_sd, magic_model=magic)
    for p in gen.generate(4, seed=0, magic=True):
        assert p.text.endswith(", by greg rutkowski, gold jewelry")
        assert count_subject(p.text, "ohwx woman") == 1
        for word in ("naked", "sexy", "bloody", "smiling"):
            assert word not in p.text


def test_magic_true_offline_raises_and_auto_falls_back() -> None:
    gen = PromptGenerator("ohwx", "person", magic_model="nobody/not-a-cached-magicprompt")
    with pytest.raises(MagicPromptUnavailable, match="magic='auto'"):
        gen.generate(2, magic=True)
    with pytest.warns(UserWarning, match="MagicPrompt unavailable"):
        prompts = gen.generate(2, magic="auto", seed=0)
    assert [p.text for p in prompts] == [p.text for p in gen.generate(2, magic=False, seed=0)]


# -- CLI -----------------------------------------------------------------------------------------------
def test_prompts_cli(capsys: pytest.CaptureFixture[str], tiny_sd: Path) -> None:
    from lensa_for_all.cli.main import main

    assert main(["prompts", "--class", "cat", "--token", "sks", "-n", "3", "--seed", "1", "--json",
                 "--styles", "anime", "--tokenizer", str(tiny_sd)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 3 and all("sks cat" in d["text"] and d["negative"] for d in data)
    assert main(["prompts", "--list"]) == 0
    assert "fantasy:" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["prompts", "--magic", "--magic-model", "nobody/missing", "-n", "1"]) == 1
    assert "MagicPrompt" in capsys.readouterr().err


def test_unreachable_hub_is_detected_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from lensa_for_all.prompts import magic

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert magic.hub_unreachable() is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert magic.hub_unreachable() is True


def test_groups_by_short_name_alias_and_spelling() -> None:
    """The README's `styles=["fantasy", "headshot"]` works: aliases and loose spellings name groups."""
    cat = StyleCatalogue.default()
    headshots = {s.name for s in cat if s.group == "professional headshot"}
    assert {s.name for s in cat.select(["headshot"])} == headshots
    assert {s.name for s in cat.select(["Professional_Headshot"])} == headshots
    assert {s.name for s in cat.select(["Sci Fi"])} == {s.name for s in cat if s.group == "sci-fi"}
    both = {s.name for s in cat.select(["fantasy", "headshot"])}
    assert both == headshots | {s.name for s in cat if s.group == "fantasy"}
    with pytest.raises(ConfigError, match="point to groups"):
        StyleCatalogue.from_dict({"styles": cat.to_dict()["styles"], "group_aliases": {"x": "no such group"}})
    assert StyleCatalogue.from_dict(cat.to_dict()).group_aliases == cat.group_aliases
