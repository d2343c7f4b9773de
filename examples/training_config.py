"""Build, validate, save and reload a TrainingConfig.

Runs offline and imports no torch. Real use:

    config = TrainingConfig.for_subject("person", "lora")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lensa_for_all import ConfigError, TrainingConfig


def main() -> None:
    # presets: people get prior preservation and a trained text encoder; pets a short run without class images
    person = TrainingConfig.for_subject("person", "full")
    dog = TrainingConfig.for_subject("dog", "lora", max_train_steps=300)
    print("person/full:", person.instance_prompt_text, "| steps for 12 photos:", person.resolve_max_train_steps(12),
          "| prior preservation:", person.with_prior_preservation, "| lr:", person.learning_rate)
    print("dog/lora:", dog.instance_prompt_text, "| steps:", dog.resolve_max_train_steps(12))

    # a bad setting fails at once, naming the field
    try:
        TrainingConfig(resolution=500)
    except ConfigError as exc:
        print("refused:", exc)

    # JSON round trip, and SageMaker-style string hyper-parameters
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "training_config.json"
        person.to_json(path)
        assert TrainingConfig.from_json(path) == person
        tuned = person.with_hyperparameters({"max_train_steps": "1200", "gradient_checkpointing": "true"})
        print("overridden:", tuned.max_train_steps, tuned.gradient_checkpointing)


if __name__ == "__main__":
    main()
