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


def test_overlapping_files_by_path_and_by_content(tmp_path):
    a, b, c = tmp_path / "a.data", tmp_path / "b.data", tmp_path / "c.data"
    a.write_text("x\ty\t1\n", encoding="utf-8")
    b.write_text("x\ty\t1\n", encoding="utf-8")  # the same content under another name
    c.write_text("x\ty\t0\n", encoding="utf-8")  # same size, other content
    assert readers.overlapping_files([a], [a]) == [(a, a)]
    assert readers.overlapping_files([a, c], [b]) == [(a, b)]
    assert readers.overlapping_files([c], [a, b]) == []


def test_selecting_on_a_training_file_is_refused(tiny_checkpoint, tmp_path, capsys):
    """The model must not be selected on files it trained on: one line before any training."""
    from roformer_sim_ft.cli import main

    sample = str(readers.sample_data_dir())
    base = ["train", "--checkpoint", str(tiny_checkpoint), "--data", sample, "--eval-data", sample,
            "--eval-every", "1", "--steps", "1", "--batch-size", "8", "--no-progress"]
    assert main(base + ["--splits", "train,valid", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "valid.data" in err and "--allow-eval-overlap" in err
    assert not (tmp_path / "a" / "run.json").exists()
    # a copy of a training file under another folder is the same file too
    copy = tmp_path / "copy"
    (copy / "senteval_cn" / "ATEC").mkdir(parents=True)
    train_file = readers.sample_data_dir() / "senteval_cn" / "ATEC" / "ATEC.train.data"
    (copy / "senteval_cn" / "ATEC" / "ATEC.valid.data").write_bytes(train_file.read_bytes())
    assert main(base[:5] + ["--eval-data", str(copy)] + base[7:] + ["--out", str(tmp_path / "b")]) == 2
    assert "content of training file" in capsys.readouterr().err
    # the default splits (train) select on valid without overlap
    assert main(base + ["--out", str(tmp_path / "c")]) == 0
    run = json.loads((tmp_path / "c" / "run.json").read_text(encoding="utf-8"))
    assert run["result"]["evaluations"] and run["settings"]["splits"] == ["train"]


def test_pipeline_refuses_to_report_on_training_files_before_training(tiny_checkpoint, tmp_path):
    from roformer_sim_ft.errors import RoformerSimError
    from roformer_sim_ft.pipeline import run_pipeline

    with pytest.raises(RoformerSimError, match="allow-eval-overlap"):
        run_pipeline(tiny_checkpoint, readers.sample_data_dir(), tmp_path / "p", eval_split="train")
    assert not (tmp_path / "p" / "supervised").exists()
