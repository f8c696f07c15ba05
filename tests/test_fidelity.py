"""Fidelity to the reference scripts where it is a matter of construction (docs/FIDELITY.md)."""
from __future__ import annotations

import json

import pytest

from roformer_sim_ft import readers, training
from roformer_sim_ft.objectives import DistillObjective, SupervisedObjective

from bert4keras.layers import Dropout, MultiHeadAttention  # noqa: E402  (after roformer_sim_ft)
from bert4keras.models import build_transformer_model  # noqa: E402


def dropout_rates(model) -> dict[str, float]:
    """Every dropout of a bert4keras model by layer name: Dropout layers' ``rate`` and the
    attention-probability dropout, which MultiHeadAttention.call creates from ``attention_dropout``."""
    rates = {}
    for layer in model.layers:
        if isinstance(layer, MultiHeadAttention):
            rates[f"{layer.name}/attention_dropout"] = layer.attention_dropout or 0.0
        elif isinstance(layer, Dropout):
            rates[layer.name] = layer.rate
    return rates


REFERENCE_BUILDS = {
    # train/stage2.py (and stage1.py): the UniLM student
    "stage2": dict(model="roformer", application="unilm", with_pool="linear", with_mlm="linear", dropout_rate=0.2),
    # train/supervised.py: the encoder alone
    "supervised": dict(model="roformer", with_pool="linear", dropout_rate=0.2),
}


@pytest.mark.parametrize("stage", ["supervised", "distill"])
@pytest.mark.parametrize("reference", sorted(REFERENCE_BUILDS))
def test_training_model_dropout_equals_the_reference(stage, reference, tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "bert_config.json").read_text())
    assert config["attention_probs_dropout_prob"] != 0.2  # else the check below could not tell them apart
    if stage == "supervised":
        objective = SupervisedObjective(tiny_checkpoint, dropout_rate=0.2)
    else:
        objective = DistillObjective(tiny_checkpoint, tiny_checkpoint, dropout_rate=0.2)
    objective.build()
    ours = dropout_rates(objective.model.model)
    theirs = dropout_rates(build_transformer_model(str(tiny_checkpoint / "bert_config.json"), None,
                                                   **REFERENCE_BUILDS[reference]))
    attention = [name for name in theirs if name.endswith("/attention_dropout")]
    assert len(attention) == config["num_hidden_layers"]
    assert len(theirs) > len(attention)  # hidden dropout layers are there too
    assert ours == theirs
    for name, rate in ours.items():
        expected = config["attention_probs_dropout_prob"] if name in attention else 0.2
        assert rate == pytest.approx(expected), name


@pytest.mark.parametrize("command", ["train", "distill"])
def test_attention_dropout_flag_reaches_the_attention_layers(command, tiny_checkpoint, tmp_path, monkeypatch):
    from roformer_sim_ft.cli import main

    trained = []
    real_train = training.train

    def spy(objective, *args, **kwargs):
        result = real_train(objective, *args, **kwargs)
        trained.append(objective)
        return result

    monkeypatch.setattr(training, "train", spy)
    sample = readers.sample_data_dir()
    if command == "train":
        data = ["--checkpoint", str(tiny_checkpoint), "--data", str(sample)]
    else:
        data = ["--teacher", str(tiny_checkpoint), "--student", str(tiny_checkpoint),
                "--pairs", str(sample / "synonyms" / "sample.jsonl")]
    loop = ["--out", str(tmp_path / "out"), "--steps", "1", "--batch-size", "8", "--save-every", "0", "--no-progress"]
    assert main([command, *data, *loop, "--dropout", "0.15", "--attention-dropout", "0.3"]) == 0
    (objective,) = trained
    rates = dropout_rates(objective.model.model)
    attention = {k: v for k, v in rates.items() if k.endswith("/attention_dropout")}
    hidden = {k: v for k, v in rates.items() if k not in attention}
    assert attention and set(attention.values()) == {0.3}
    assert hidden and set(hidden.values()) == {0.15}
