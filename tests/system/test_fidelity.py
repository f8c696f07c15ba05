"""Fidelity to the reference scripts where it is a matter of construction (docs/FIDELITY.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from roformer_sim_ft.data import readers
from roformer_sim_ft.training import resume
from roformer_sim_ft import training
from roformer_sim_ft.training.objectives import DistillObjective, Stage1Objective, SupervisedObjective

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


# The reference scripts' builds, as bert4keras 0.10.6 made them. 0.10.6's MultiHeadAttention has no dropout
# on the attention probabilities (bert4keras-0.10.6/layers.py:358-360, softmax straight into the einsum); on
# 0.11.5 the same build falls back to the config's attention_probs_dropout_prob, so 0.10.6 is 0.11.5 with 0.
NO_ATTENTION_DROPOUT = dict(attention_dropout_rate=0.0)
REFERENCE_BUILDS = {
    # train/stage2.py (and stage1.py): the UniLM student
    "stage2": dict(model="roformer", application="unilm", with_pool="linear", with_mlm="linear", dropout_rate=0.2,
                   **NO_ATTENTION_DROPOUT),
    # train/supervised.py: the encoder alone
    "supervised": dict(model="roformer", with_pool="linear", dropout_rate=0.2, **NO_ATTENTION_DROPOUT),
}


def packed_attention_dropout(objective) -> float | None:
    """The attention dropout of the packed UniLM student (the training forward of distillation and stage 1)."""
    packed = getattr(objective, "_packed", None)
    return None if packed is None else packed.attention_dropout_rate


@pytest.mark.parametrize("stage", ["supervised", "distill", "pretrain"])
@pytest.mark.parametrize("reference", sorted(REFERENCE_BUILDS))
def test_training_model_dropout_equals_the_reference(stage, reference, tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "bert_config.json").read_text())
    assert config["attention_probs_dropout_prob"] > 0  # else the check below could not tell 0.10.6 from 0.11.5
    objective = {"supervised": lambda: SupervisedObjective(tiny_checkpoint),
                 "distill": lambda: DistillObjective(tiny_checkpoint, tiny_checkpoint),
                 "pretrain": lambda: Stage1Objective(tiny_checkpoint)}[stage]()
    objective.prepare()
    objective.build()
    ours = dropout_rates(objective.model.model)
    theirs = dropout_rates(build_transformer_model(str(tiny_checkpoint / "bert_config.json"), None,
                                                   **REFERENCE_BUILDS[reference]))
    attention = [name for name in theirs if name.endswith("/attention_dropout")]
    assert len(attention) == config["num_hidden_layers"]
    assert len(theirs) > len(attention)  # hidden dropout layers are there too
    assert ours == theirs
    for name, rate in ours.items():
        assert rate == pytest.approx(0.0 if name in attention else 0.2), name
    assert packed_attention_dropout(objective) in (None, 0.0)


def _run_with_spy(monkeypatch, argv):
    """Run the CLI; return the (objective, batches) it handed to the training loop."""
    from roformer_sim_ft.cli import main

    seen = []
    real_train = training.train

    def spy(objective, batches, *args, **kwargs):
        result = real_train(objective, batches, *args, **kwargs)
        seen.append((objective, batches))
        return result

    monkeypatch.setattr(training, "train", spy)
    assert main(argv) == 0
    (found,) = seen
    return found


def _stage_args(command, checkpoint, extra=()):
    sample = readers.sample_data_dir()
    if command == "train":
        return ["--checkpoint", str(checkpoint), "--data", str(sample)]
    pairs = ["--pairs", str(sample / "synonyms" / "sample.jsonl"), *extra]
    if command == "distill":
        return ["--teacher", str(checkpoint), "--student", str(checkpoint), *pairs]
    return ["--checkpoint", str(checkpoint), *pairs]


@pytest.mark.parametrize("command, flags, attention", [
    ("train", [], 0.0), ("distill", [], 0.0), ("pretrain", [], 0.0),  # the published models' recipe
    ("train", ["--dropout", "0.15", "--attention-dropout", "0.3"], 0.3),
    ("distill", ["--dropout", "0.15", "--attention-dropout", "0.1"], 0.1),
    ("pretrain", ["--attention-dropout", "config"], "config"),  # bert4keras 0.11.5's fallback
])
def test_attention_dropout_of_each_command(command, flags, attention, tiny_checkpoint, tmp_path, monkeypatch):
    """Every layer's rates as the flags say, and run.json records the rate and Adam's epsilon used."""
    config = json.loads((tiny_checkpoint / "bert_config.json").read_text())
    want = config["attention_probs_dropout_prob"] if attention == "config" else attention
    hidden_want = 0.15 if "--dropout" in flags else 0.2
    loop = ["--out", str(tmp_path / "out"), "--steps", "1", "--batch-size", "8", "--save-every", "0", "--no-progress"]
    objective, _ = _run_with_spy(monkeypatch, [command, *_stage_args(command, tiny_checkpoint), *loop, *flags])
    rates = dropout_rates(objective.model.model)
    attention_rates = {k: v for k, v in rates.items() if k.endswith("/attention_dropout")}
    hidden = {k: v for k, v in rates.items() if k not in attention_rates}
    assert len(attention_rates) == config["num_hidden_layers"]
    assert all(rate == pytest.approx(want) for rate in attention_rates.values()), attention_rates
    assert hidden and all(rate == pytest.approx(hidden_want) for rate in hidden.values()), hidden
    assert packed_attention_dropout(objective) in (None, pytest.approx(want))
    if command != "train":
        assert packed_attention_dropout(objective) is not None  # the packed student is the training forward
    settings = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))["settings"]
    assert settings["attention_dropout_used"] == pytest.approx(want)
    assert settings["attention_dropout_rate"] == (None if attention == "config" else pytest.approx(want))
    assert settings["adam_epsilon"] == 1e-7


def _keras_231_adam_with_decay(params, grads_per_step, lr, weight_decay, epsilon=1e-7, beta_1=0.9, beta_2=0.999):
    """keras 2.3.1's ``Adam.get_updates`` (keras-2.3.1/optimizers.py) under bert4keras 0.10.6's
    ``extend_with_weight_decay`` (bert4keras-0.10.6/optimizers.py:325-348), in float64 numpy:
    ``lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)``, ``p_t = p - lr_t * m_t / (sqrt(v_t) + epsilon)``,
    then ``- lr * weight_decay * p`` with p the weight before the step. keras 2.3.1 holds lr, beta_1 and
    beta_2 in float32 ``K.variable``s, and the python weight decay meets float32 tensors, so their values
    here are the float32 ones (0.999 is 0.99900001...)."""
    lr, beta_1, beta_2, weight_decay = (float(np.float32(x)) for x in (lr, beta_1, beta_2, weight_decay))
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        lr_t = lr * np.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t)
        for k, p in params.items():
            m[k] = beta_1 * m[k] + (1.0 - beta_1) * grads[k]
            v[k] = beta_2 * v[k] + (1.0 - beta_2) * np.square(grads[k])
            params[k] = p - lr_t * m[k] / (np.sqrt(v[k]) + epsilon) - lr * weight_decay * p
    return params


@pytest.mark.parametrize("epsilon, equal", [(None, True), (1e-6, False)])
def test_optimizer_steps_equal_keras_2_3_1_adam_with_bert4keras_weight_decay(epsilon, equal):
    """Three steps of the loop's optimiser on float64 weights: equal to the reference's update rule to 1e-6
    relative at the default epsilon; bert4keras's TF2 epsilon (1e-6) is visibly another rule. Gradients span
    the small magnitudes the tied MLM head gives every embedding row, and one arrives as IndexedSlices."""
    import tensorflow as tf

    from roformer_sim_ft.settings import TrainConfig

    rng = np.random.default_rng(0)
    params = {"embeddings": rng.normal(0, 0.02, (50, 8)), "bias": rng.normal(0, 0.02, (8,))}
    scales = {"embeddings": 10.0 ** rng.uniform(-9, -2, (50, 1)), "bias": 10.0 ** rng.uniform(-8, -3, (8,))}
    grads = [{k: rng.normal(0, 1, p.shape) * scales[k] for k, p in params.items()} for _ in range(3)]
    lr, decay = 1e-3, 0.01
    config = TrainConfig(out_dir="unused", learning_rate=lr, weight_decay=decay)
    if epsilon is not None:
        config.adam_epsilon = epsilon
    optimizer = training.make_optimizer(config)
    variables = {k: tf.Variable(p, dtype=tf.float64) for k, p in params.items()}
    for step in grads:
        rows = tf.IndexedSlices(tf.constant(step["embeddings"]), tf.range(50), tf.constant([50, 8]))
        optimizer.apply_gradients([(rows, variables["embeddings"]), (tf.constant(step["bias"]), variables["bias"])])
    want = _keras_231_adam_with_decay(params, grads, lr, decay)
    for k in params:
        got_update, want_update = variables[k].numpy() - params[k], want[k] - params[k]
        relative = np.abs(got_update - want_update) / np.abs(want_update)
        assert (relative.max() <= 1e-6) == equal, (k, relative.max())


def test_layer_norm_epsilon_of_bert4keras_0_10_6_changes_vectors_by_round_off(tiny_config, tiny_vocab):
    """0.10.6 puts 1e-12 in every LayerNorm, 0.11.5 1e-7 in the transformer's: the pooled vectors agree to
    1e-5 relative, at init scale 0.02 and at 1.0 (docs/FIDELITY.md gives the measured sizes)."""
    from bert4keras.layers import LayerNormalization

    from roformer_sim_ft import checkpoints
    from roformer_sim_ft.model import SimModel

    texts = ["今天天气不错", "我喜欢北京", "给我推荐一款红色的车"]
    for scale in (0.02, 1.0):
        config = {**tiny_config, "initializer_range": scale}
        weights = checkpoints.init_weights(config, seed=1)
        ours = SimModel(config, tiny_vocab, weights)
        old = SimModel(config, tiny_vocab, weights)
        norms = [layer for layer in old.model.layers if isinstance(layer, LayerNormalization)]
        assert norms and any(layer.epsilon != 1e-12 for layer in norms)  # else nothing is compared
        for layer in norms:
            layer.epsilon = 1e-12
        a, b = ours.encode(texts, normalize=False), old.encode(texts, normalize=False)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), scale


def test_distill_weights_interleave_the_sources_as_the_reference(tiny_checkpoint, tmp_path, monkeypatch):
    """``distill --weights 2,1,1`` with three pair files: every batch of 4 pairs takes f1, f2, f1, f3
    (train/stage2.py:55-73), counted from the batches' target texts (never masked)."""
    alphabets = ["春夏秋冬", "东南西北", "金木水火"]
    files = []
    for k, chars in enumerate(alphabets):
        path = tmp_path / f"f{k + 1}.jsonl"
        lines = [json.dumps({"text_a": chars[i % 4] + chars[(i + 1) % 4] * (1 + i % 3),
                             "text_b": chars[(i + 2) % 4] * (2 + i % 2)}, ensure_ascii=False) for i in range(7 + k)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files += ["--pairs", str(path)]
    loop = ["--out", str(tmp_path / "out"), "--steps", "1", "--batch-size", "8", "--save-every", "0", "--no-progress"]
    argv = ["distill", "--teacher", str(tiny_checkpoint), "--student", str(tiny_checkpoint), *files, *loop,
            "--weights", "2,1,1"]
    _, stream = _run_with_spy(monkeypatch, argv)
    tokenizer = stream.tokenizer
    for index in range(6):
        batch = stream.batch_at(index)
        sources = []
        for ids, segments in zip(batch["student_token_ids"][::2], batch["student_segment_ids"][::2]):
            target = [tokenizer.id_to_token(int(i)) for i, s in zip(ids, segments) if s == 1][:-1]  # drop [SEP]
            (source,) = {k for k, chars in enumerate(alphabets) if set(target) <= set(chars)}
            sources.append(source)
        assert sources == [0, 1, 0, 2], index  # 2:1:1 per batch, in the reference's order
    assert json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))["settings"]["weights"] == [2, 1, 1]


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


def test_resuming_a_state_from_before_the_faithful_defaults_names_the_flags_that_restore_them(tmp_path):
    """A state saved with the config's attention dropout (recorded as null) and no recorded epsilon (1e-6 then)
    is another recipe: resume stops and names the flag value that continues it."""
    from types import SimpleNamespace

    from roformer_sim_ft.errors import RoformerSimError
    from roformer_sim_ft.settings import TrainConfig

    config = TrainConfig(out_dir=str(tmp_path), learning_rate=1e-5, resume=True)
    old = {"stage": "distill", "attention_dropout_rate": None}
    run = SimpleNamespace(config=config, settings={"stage": "distill", "attention_dropout_rate": 0.0,
                                                   "adam_epsilon": config.adam_epsilon})
    with pytest.raises(RoformerSimError, match="adam_epsilon 1e-06, not 1e-07.*--adam-epsilon 1e-06"):
        resume.check_settings(run, tmp_path / "step-5", {"settings": old, "seed": 0})
    run.settings["adam_epsilon"] = 1e-6
    with pytest.raises(RoformerSimError, match="attention_dropout_rate config, not 0.0.*--attention-dropout config"):
        resume.check_settings(run, tmp_path / "step-5", {"settings": old, "seed": 0})
    run.settings["attention_dropout_rate"] = None
    resume.check_settings(run, tmp_path / "step-5", {"settings": old, "seed": 0})  # the old recipe continues


def test_pipeline_distill_weights_count_the_pair_files_and_the_labelled_data(tiny_checkpoint, tmp_path, capsys):
    from roformer_sim_ft.cli import main

    pairs = readers.sample_data_dir() / "synonyms" / "sample.jsonl"
    argv = ["pipeline", "--checkpoint", str(tiny_checkpoint), "--data", str(readers.sample_data_dir()),
            "--out", str(tmp_path / "p"), "--pairs", str(pairs), "--distill-weights", "2,1,1"]
    assert main(argv) == 2
    assert "3 weights for 2 data sources" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
