"""Stage 1 (``pretrain``): the SimBERT v2 loss, its training, plain-RoFormer starts, and the
global-batch losses of every stage on two replicas."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from roformer_sim_ft.data import batches as B, readers
from roformer_sim_ft import checkpoints, training
from roformer_sim_ft.cli import main
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.training.losses import SimilarityCrossEntropyLoss
from roformer_sim_ft.model import SimModel
from roformer_sim_ft.training.objectives import DistillObjective, Stage1Objective
from roformer_sim_ft.settings import parse_weights

import tensorflow as tf  # noqa: E402  (after roformer_sim_ft)

SYNONYMS = readers.sample_data_dir() / "synonyms"


def np_similarity_ce(vectors: np.ndarray, scale: float = 20.0) -> float:
    """The formula, in float64: softmax over scaled cosines without the diagonal, target the partner row."""
    x = vectors.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = (x @ x.T - np.eye(len(x)) * 1e12) * scale
    sims -= sims.max(axis=1, keepdims=True)
    log_p = sims - np.log(np.exp(sims).sum(axis=1, keepdims=True))
    partner = np.arange(len(x)) ^ 1
    return float(-log_p[np.arange(len(x)), partner].mean())


@pytest.fixture(scope="module")
def stream(tiny_model, sample_groups):
    return B.Stage1Batches(sample_groups, tiny_model.tokenizer, batch_size=16, seed=0)


# ----------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("rows,hidden,scale", [(2, 3, 20.0), (8, 5, 20.0), (16, 32, 5.0)])
def test_similarity_cross_entropy_matches_numpy(rows, hidden, scale):
    vectors = np.random.default_rng(rows).normal(size=(rows, hidden)).astype(np.float32)
    got = float(SimilarityCrossEntropyLoss(scale)(tf.constant(vectors)))
    assert got == pytest.approx(np_similarity_ce(vectors, scale), rel=1e-5)
    if rows > 2:  # each row's partner its nearest neighbour by far: less than the random batch's loss
        pairs = np.repeat(np.eye(rows // 2, hidden, dtype=np.float32), 2, axis=0)
        assert float(SimilarityCrossEntropyLoss(scale)(pairs)) < 0.1 * np_similarity_ce(vectors, scale)


def test_stage1_loss_equals_the_reference_in_plain_bert4keras(spread_checkpoint, tiny_model, stream):
    """Both terms of one fixed batch: ours (scored-position head and all-position head) == stage1.py's
    TotalLoss formulas in bert4keras ops on a bert4keras model built as stage1.py builds it."""
    from bert4keras.backend import K
    from bert4keras.models import build_transformer_model

    batch = stream.batch_at(1)
    tokens, segments = batch["token_ids"], batch["segment_ids"]
    assert 0 < segments.sum() < segments.size and (tokens == 0).any()  # both segments and padding
    roformer = build_transformer_model(
        str(spread_checkpoint / "bert_config.json"), str(spread_checkpoint / "bert_model.ckpt"), model="roformer",
        application="unilm", with_pool="linear", with_mlm="linear", dropout_rate=0.2, ignore_invalid_weights=True)
    pooled, logits = roformer.predict([tokens, segments], verbose=0)
    y_true, y_mask, y_pred = tokens[:, 1:], segments[:, 1:].astype("float32"), logits[:, :-1]
    seq2seq = K.sum(K.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True) * y_mask) / K.sum(y_mask)
    idxs = K.arange(0, K.shape(pooled)[0])
    labels = K.cast(K.equal(idxs[None, :], (idxs + 1 - idxs % 2 * 2)[:, None]), K.floatx())
    v = K.l2_normalize(pooled, axis=1)
    sims = (K.dot(v, K.transpose(v)) - K.eye(K.shape(v)[0]) * 1e12) * 20
    similarity = K.mean(K.categorical_crossentropy(labels, sims, from_logits=True))
    reference = {"seq2seq": float(seq2seq), "similarity": float(similarity)}
    assert reference["similarity"] == pytest.approx(np_similarity_ce(pooled), rel=1e-5)
    for target_only in (True, False):
        objective = Stage1Objective(spread_checkpoint, dropout_rate=0.0, target_logits_only=target_only)
        objective.build()
        total, parts = objective.loss({k: tf.constant(v) for k, v in batch.items()}, training=False)
        for name, value in reference.items():
            assert float(parts[name]) == pytest.approx(value, rel=1e-5), (target_only, name)
        assert float(total) == pytest.approx(sum(reference.values()), rel=1e-5)


# ----------------------------------------------------------------------------- training
def _recall_at_1(model: SimModel, stream, indices) -> float:
    """Per batch: each text's nearest other text (cosine of pooled vectors) is its partner."""
    hits = total = 0
    for index in indices:
        texts = [t for pair in stream.texts_at(index) for t in pair]
        v = model.encode(texts)
        sims = v @ v.T - np.eye(len(texts)) * 10
        hits += int((sims.argmax(axis=1) == np.arange(len(texts)) ^ 1).sum())
        total += len(texts)
    return hits / total


def test_stage1_lowers_both_terms_and_raises_recall(tiny_checkpoint, tiny_model, stream, tmp_path):
    held = list(range(5))  # every sample group once (78 groups, 8 per batch)

    def terms(path):
        objective = Stage1Objective(path, dropout_rate=0.0)
        objective.build()
        parts = [objective.loss(stream.batch_at(i), training=False)[1] for i in held]
        return np.array([[float(p[t]) for t in ("seq2seq", "similarity")] for p in parts]).mean(axis=0)

    before, recall_before = terms(tiny_checkpoint), _recall_at_1(tiny_model, stream, held)
    config = training.TrainConfig(out_dir=str(tmp_path / "sim"), steps=40, learning_rate=3e-3, log_every=1,
                                  save_every=0, show_progress=False)
    result = training.train(Stage1Objective(tiny_checkpoint, dropout_rate=0.0, attention_dropout_rate=0.0),
                            B.Stage1Batches(stream.groups, tiny_model.tokenizer, batch_size=16, seed=1), config)
    assert set(result.losses) == {"loss", "seq2seq", "similarity"}
    after = terms(tmp_path / "sim")
    recall_after = _recall_at_1(SimModel.load(tmp_path / "sim"), stream, held)
    print(f"terms before {before}, after {after}; recall@1 before {recall_before:.3f}, after {recall_after:.3f}")
    assert after[0] < before[0] and after[1] < before[1], (before, after)
    assert recall_after > recall_before + 0.1, (recall_before, recall_after)


def _without(src, dst, prefixes):
    """A copy of checkpoint ``src`` lacking the variables under ``prefixes`` (a plain RoFormer)."""
    config, vocab, weights = checkpoints.load_checkpoint(src)
    dst.mkdir()
    checkpoints._save_tensors(dst / checkpoints.CKPT_NAME, {k: v for k, v in weights.items() if not k.startswith(prefixes)})
    checkpoints.write_config_vocab(dst, config, vocab)
    return weights


def test_pooler_only_missing_is_initialised_on_request(tiny_checkpoint, tmp_path):
    stored = _without(tiny_checkpoint, tmp_path / "roformer", ("bert/pooler/",))
    with pytest.raises(RoformerSimError, match="lacks 2 required variables: bert/pooler/dense/kernel"):
        SimModel.load(tmp_path / "roformer")
    files = checkpoints.resolve(tmp_path / "roformer")
    assert checkpoints.absent_heads(files.prefix, checkpoints.read_config(files.config)) == [
        "bert/pooler/dense/kernel", "bert/pooler/dense/bias"]
    objective = Stage1Objective(tmp_path / "roformer")
    objective.build()
    assert objective.initialised == ["bert/pooler/dense/kernel", "bert/pooler/dense/bias"]
    weights = objective.model.get_weights()
    assert all(np.array_equal(weights[k], v) for k, v in stored.items() if not k.startswith("bert/pooler/"))
    assert weights["bert/pooler/dense/bias"].max() == 0 and 0 < weights["bert/pooler/dense/kernel"].std() < 0.03


def test_pretrain_from_a_roformer_without_heads_loads_and_generates_in_plain_bert4keras(tiny_checkpoint, tmp_path, capsys):
    _without(tiny_checkpoint, tmp_path / "roformer", ("bert/pooler/", "cls/predictions/"))
    out = tmp_path / "sim"
    assert main(["pretrain", "--checkpoint", str(tmp_path / "roformer"), "--pairs", str(SYNONYMS / "sample.jsonl"),
                 "--pairs", str(SYNONYMS / "pairs.jsonl"), "--weights", "2,1", "--out", str(out), "--steps", "2",
                 "--batch-size", "8", "--lr", "1e-3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "lacks 7 variables, initialised" in printed and "bert/pooler/dense/kernel" in printed
    assert "cls/predictions/output_bias" in printed and "seq2seq" in printed and "similarity" in printed
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["settings"]["stage"] == "pretrain" and run["settings"]["weights"] == [2, 1]
    assert len(run["settings"]["initialised"]) == 7
    ours = SimModel.load(out)
    text = "微信和支付宝哪个好？"
    tokens, _ = ours.tokenizer.encode(text)
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_KERAS"] = "1"; os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import json, numpy as np
        from bert4keras.models import build_transformer_model
        ck = {str(out)!r}
        model = build_transformer_model(ck + "/bert_config.json", ck + "/bert_model.ckpt", model="roformer",
                                        application="unilm", with_pool="linear")
        tokens = {tokens!r}
        pooled = model.predict([np.array([tokens]), np.zeros((1, len(tokens)))], verbose=0)[0][0]
        generated = []
        for _ in range(6):  # greedy decoding, whatever the end token
            ids = tokens + generated
            segs = [0] * len(tokens) + [1] * len(generated)
            probas = model.predict([np.array([ids]), np.array([segs])], verbose=0)[1]
            generated.append(int(probas[0, -1].argmax()))
        print("RESULT", json.dumps({{"pooled": pooled.tolist(), "generated": generated}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_KERAS", "TF_USE_LEGACY_KERAS")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.split("RESULT", 1)[1])
    np.testing.assert_allclose(theirs["pooled"], ours.encode(text, normalize=False), atol=1e-5)
    generated = []
    for _ in range(6):
        ids = np.array([tokens + generated])
        segs = np.array([[0] * len(tokens) + [1] * len(generated)])
        generated.append(int(ours.seq2seq.predict([ids, segs], verbose=0)[0, -1].argmax()))
    assert theirs["generated"] == generated


# ----------------------------------------------------------------------------- data
def test_weighted_interleaving_is_a_pure_function_and_resumes(tiny_model, sample_groups):
    sources = [sample_groups[:10], sample_groups[10:13], sample_groups[13:20]]
    sampler = B._RoundRobin([len(s) for s in sources], seed=4, weights=[2, 1, 1])
    order = [sampler(t)[0] for t in range(12)]
    assert order == [0, 1, 0, 2] * 3  # 2:1:1 in every run of four, as the reference's f1, f2, f1, f3
    assert sampler.consumed(10) == [5, 3, 2]
    firsts = [sampler(t) for t in range(40)]
    assert all(i < len(sources[j]) for j, i in firsts)
    passes = [i for j, i in (sampler(t) for t in range(4 * 3)) if j == 1]  # source 1 (3 groups): one pass
    assert sorted(passes) == [0, 1, 2]
    assert [B._RoundRobin([10, 3, 7], seed=4, weights=[2, 1, 1])(t) for t in range(40)] == firsts
    assert [B._RoundRobin([4, 4], seed=0)(t)[0] for t in range(4)] == [0, 1, 0, 1]  # no weights: 1:1 as before

    stream = B.Stage1Batches(sources, tiny_model.tokenizer, batch_size=8, seed=2, weights=(2, 1, 1))
    expected = [stream.batch_at(i) for i in range(4)]
    stream.advance(2)
    state = json.loads(json.dumps(stream.state()))
    assert state["kind"] == "pretrain" and state["weights"] == [2, 1, 1]
    resumed = B.Stage1Batches(sources, tiny_model.tokenizer, batch_size=8, seed=2, weights=(2, 1, 1))
    resumed.restore(state)
    for want in expected[2:]:
        got = next(resumed)
        assert set(got) == {"token_ids", "segment_ids"}
        assert all(np.array_equal(got[k], want[k]) for k in want)
    other = B.Stage1Batches(sources, tiny_model.tokenizer, batch_size=8, seed=2, weights=(1, 1, 1))
    with pytest.raises(RoformerSimError, match="weights"):
        other.restore(state)
    distill = B.DistillBatches(sources, tiny_model.tokenizer, batch_size=8, seed=2, weights=(2, 1, 1))
    with pytest.raises(RoformerSimError, match="sampler state is for pretrain"):
        distill.restore(state)
    # the rows of a stage-1 batch are the distillation batch's student rows
    assert np.array_equal(distill.batch_at(3)["student_token_ids"], expected[3]["token_ids"])


def test_sources_and_weights_from_files(tmp_path):
    data = readers.load_distill_pairs([SYNONYMS / "sample.jsonl", SYNONYMS / "pairs.jsonl"],
                                      labeled_dir=readers.sample_data_dir())
    assert len(data.sizes) == 3 and sum(data.sizes) == len(data.groups)
    stream = B.Stage1Batches.from_data(data, None, weights=(1, 1, 1), batch_size=8)
    assert [len(s) for s in stream.sources] == data.sizes and stream.groups == data.groups
    assert parse_weights("2, 1,1", 3) == (2, 1, 1) and parse_weights(None, 3) is None
    for bad, match in (("2,1", "2 weights for 3 data sources"), ("2,0,1", "positive integers"),
                       ("2,x,1", "positive integers"), ("1.5,1,1", "positive integers")):
        with pytest.raises(RoformerSimError, match=match):
            parse_weights(bad, 3)


def test_pretrain_cli_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text_a": "今天天气不错", "text_b": "今天天气很好"}\n{"text": "只有一句"}\n', encoding="utf-8")
    base = ["pretrain", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"), "--steps", "1",
            "--batch-size", "4", "--no-progress"]
    for args, expected in (([], "give --pairs FILE or --from-labeled DIR"),
                           (["--pairs", str(bad)], f"{bad}:2: missing key 'synonyms'"),
                           (["--pairs", str(SYNONYMS / "pairs.jsonl"), "--weights", "1,1"], "2 weights for 1 data sources")):
        assert main(base + args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err


def test_pretrain_flags_default_to_stage1_settings():
    from dataclasses import asdict

    from roformer_sim_ft.cli import _stage_args, build_parser
    from roformer_sim_ft.settings import Stage1Settings

    args = build_parser().parse_args(["pretrain", "--checkpoint", "c", "--pairs", "p", "--out", "o"])
    for name, value in _stage_args(args).items():
        assert value == asdict(Stage1Settings())[name], name
    assert (args.batch_size, args.learning_rate, args.weight_decay, args.maxlen, args.dropout, args.bucket) == (
        96, 1e-5, 0.01, 64, 0.2, 1)  # train/stage1.py
    assert args.similarity_scale == Stage1Settings.similarity_scale == 20.0


# ----------------------------------------------------------------------------- several devices
MULTI_DEVICE = """
import json, sys
import roformer_sim_ft, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bert4keras.backend import keras
from roformer_sim_ft.data import batches as B, readers
from roformer_sim_ft import checkpoints, training
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.model import SimModel
from roformer_sim_ft.training import loop
from roformer_sim_ft.training.objectives import DistillObjective, Stage1Objective, SupervisedObjective

ck, teacher, out = sys.argv[1:4]
# SGD with rate 1: a step moves each weight by minus its gradient, so the saved weights give the gradients.
loop.make_optimizer = lambda config: keras.optimizers.SGD(1.0)
tokenizer = SimModel.load(ck).tokenizer
groups = readers.load_distill_pairs([readers.sample_data_dir() / "synonyms" / "sample.jsonl"])
supervised = readers.load_supervised_data(readers.sample_data_dir())
quiet = dict(dropout_rate=0.0, attention_dropout_rate=0.0)
# The two stages whose similarity terms compare rows across replicas (the supervised stage's
# loss is a mean over rows: the same per-replica scaling; across workers: tests/system/test_multiworker.py).
stages = {
    "distill": (lambda: DistillObjective(teacher, ck, **quiet),
                lambda: B.DistillBatches.from_data(groups, tokenizer, batch_size=16, seed=1)),
    "pretrain": (lambda: Stage1Objective(ck, **quiet),
                 lambda: B.Stage1Batches.from_data(groups, tokenizer, batch_size=16, seed=1)),
}
start = checkpoints.load_checkpoint(ck)[2]
report = {}
for stage, (objective, batches) in stages.items():
    runs = {}
    for devices in (1, 2):
        config = training.TrainConfig(out_dir=f"{out}/{stage}{devices}", steps=1, learning_rate=1.0, weight_decay=0.0,
                                      save_every=0, devices=devices, show_progress=False)
        result = training.train(objective(), batches(), config)
        weights = checkpoints.load_checkpoint(config.out_dir)[2]
        runs[devices] = (result.losses, {k: start[k] - weights[k] for k in start})
    (l1, g1), (l2, g2) = runs[1], runs[2]
    report[stage] = {"loss1": l1, "loss2": l2,
                     "grad_diff": max(float(abs(g1[k] - g2[k]).max()) for k in g1),
                     "grad_max": max(float(abs(g1[k]).max()) for k in g1)}
try:
    training.train(SupervisedObjective(ck), B.SupervisedBatches.from_data(supervised, tokenizer, batch_size=6),
                   training.TrainConfig(out_dir=f"{out}/refused", steps=1, learning_rate=1e-3, devices=2,
                                        show_progress=False))
except RoformerSimError as e:
    report["refused"] = str(e)
report["replicas"] = training.make_strategy(2).num_replicas_in_sync
print("REPORT", json.dumps(report))
"""


def test_two_replicas_give_the_single_device_loss_and_gradients(tiny_checkpoint, spread_checkpoint, tmp_path):
    """MirroredStrategy on two logical CPUs: one step of distillation and of stage 1 gives one
    device's losses and gradients, its checkpoint loads, and a batch that splits a pair over the
    replicas is refused."""
    proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE, str(tiny_checkpoint), str(spread_checkpoint),
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    print(json.dumps(report, indent=1))
    for stage in ("distill", "pretrain"):
        one, two = report[stage]["loss1"], report[stage]["loss2"]
        assert set(one) == set(two) and len(one) >= 3
        for name in one:
            assert two[name] == pytest.approx(one[name], abs=1e-5), (stage, name, one[name], two[name])
        assert report[stage]["grad_max"] > 1e-3  # the step moved the weights
        assert report[stage]["grad_diff"] < 1e-5, (stage, report[stage])
    assert report["replicas"] == 2
    assert report["refused"] == ("a batch of 6 rows on 2 replicas: each replica must hold whole pairs "
                                 "(an even number of rows); use a batch size that is a multiple of 4")


def test_distill_teacher_vectors_equal_the_keras_encoder(tiny_checkpoint, tiny_model):
    pairs = readers.load_distill_pairs([readers.sample_data_dir() / "synonyms" / "sample.jsonl"])
    batch = B.DistillBatches.from_data(pairs, tiny_model.tokenizer, batch_size=8, seed=1).batch_at(0)
    tokens, segments = tf.constant(batch["teacher_token_ids"]), tf.constant(batch["teacher_segment_ids"])
    assert (tokens.numpy() == 0).any()  # padded rows are exercised
    objective = DistillObjective(tiny_checkpoint, tiny_checkpoint)
    objective.prepare(jit_compile=False)
    objective.build()
    assert objective.teacher.fast_forward is not None and objective._fast_teacher  # the plain-TF pass runs
    reference = objective.teacher.encoder([tokens, segments], training=False).numpy()
    vectors = objective._teacher_vectors(tokens, segments).numpy()
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


def test_distill_teacher_under_xla_uses_the_keras_encoder(tiny_checkpoint):
    # Packing has dynamic shapes: under jit_compile the teacher's vectors come from its keras encoder
    # (comparing them with that encoder would compare it with itself, so the decision is what is held).
    objective = DistillObjective(tiny_checkpoint, tiny_checkpoint)
    objective.prepare(jit_compile=True)
    assert not objective._fast_teacher
