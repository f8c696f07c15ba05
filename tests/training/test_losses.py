"""Each loss of roformer_sim_ft.training.losses against an independent numpy reference."""
import roformer_sim_ft.compat  # noqa: F401  (first: selects tf_keras)

import numpy as np
import pytest
import tensorflow as tf

from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.training.losses import (
    COSINE_LOSSES, CosineHingeLoss, CosineMSELoss, CosineMSEPM1Loss, MaskedClassifierLoss,
    SeparateHeadsLoss, Seq2SeqLoss, SimilarityMatrixLoss, feature_dim, pair_features, parse_features,
)

RTOL = 1e-5


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def row_labels(rng, pairs, kind):
    """Row labels [2P] (both rows of a pair equal) for 'binary', 'nli' or 'mixed' batches."""
    pool = {"binary": [0, 1], "nli": [2, 3, 4], "mixed": [0, 1, 2, 3, 4]}[kind]
    return np.repeat(rng.choice(pool, size=pairs), 2)


def np_masked_ce(labels, logits):
    """Per row: 2-way softmax CE over logits[:2] (binary) or 3-way over logits[2:] (NLI)."""
    out = []
    for y, z in zip(labels, logits.astype(np.float64)):
        out.append(-log_softmax(z[:2])[y] if y < 2 else -log_softmax(z[2:])[y - 2])
    return float(np.mean(out))


def np_cos(vectors):
    u, v = vectors[0::2].astype(np.float64), vectors[1::2].astype(np.float64)
    return (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)


def np_targets(labels):
    """Per pair (t, keep): binary label as is; entailment 1, contradiction 0, neutral dropped."""
    y = labels[0::2]
    return np.isin(y, [1, 3]).astype(float), (y != 4).astype(float)


NP_COSINE = {
    "cos-mse": lambda c, t: t * (c - 1) ** 2 + (1 - t) * c ** 2,
    "cos-mse-pm1": lambda c, t: t * (c - 1) ** 2 + (1 - t) * (c + 1) ** 2,
    "cos-hinge": lambda c, t: t * np.maximum(0.9 - c, 0) + (1 - t) * np.maximum(c - 0.1, 0),
}


# ----------------------------------------------------------------------------- features
@pytest.mark.parametrize("features", [
    ("u", "v", "|u-v|"), ("u", "v"), ("|u-v|",), ("u*v",), ("|u-v|", "u*v"),
    ("u", "v", "u*v"), ("u", "v", "|u-v|", "u*v"), ("v", "u"),
])
def test_pair_features_match_numpy(features):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    u, v = x[0::2], x[1::2]
    parts = {"u": u, "v": v, "|u-v|": np.abs(u - v), "u*v": u * v}
    expected = np.repeat(np.concatenate([parts[f] for f in features], axis=1), 2, axis=0)
    got = pair_features(tf.constant(x), features).numpy()
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    assert got.shape == (6, feature_dim(4, features))
    np.testing.assert_array_equal(got[0::2], got[1::2])


def test_features_parsing_and_errors():
    assert parse_features("u, v, |u - v|") == ("u", "v", "|u-v|")
    assert parse_features(["u*v"]) == ("u*v",)
    assert feature_dim(384, "u,v,|u-v|,u*v") == 1536
    for bad in ["", "u,w", "u,u"]:
        with pytest.raises(RoformerSimError):
            parse_features(bad)
    with pytest.raises(RoformerSimError, match="even"):
        pair_features(tf.zeros([3, 4]))


def test_pair_features_keeps_dtype():
    assert pair_features(tf.zeros([4, 2], tf.float16)).dtype == tf.float16


# ----------------------------------------------------------------------------- classifier
@pytest.mark.parametrize("rows", [2, 8, 31])
@pytest.mark.parametrize("kind", ["binary", "nli", "mixed"])
def test_masked_classifier_matches_numpy(rows, kind):
    rng = np.random.default_rng(rows)
    labels = rng.choice({"binary": [0, 1], "nli": [2, 3, 4], "mixed": [0, 1, 2, 3, 4]}[kind], size=rows)
    logits = rng.normal(scale=3.0, size=(rows, 5)).astype(np.float32)
    got = float(MaskedClassifierLoss()(tf.constant(labels), tf.constant(logits)))
    assert got == pytest.approx(np_masked_ce(labels, logits), rel=RTOL)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.float32])
def test_label_dtypes_and_shapes(dtype):
    rng = np.random.default_rng(1)
    labels = rng.choice(5, size=10)
    logits = rng.normal(size=(10, 5)).astype(np.float32)
    expected = np_masked_ce(labels, logits)
    loss = MaskedClassifierLoss()
    assert float(loss(tf.constant(labels.astype(dtype)), logits)) == pytest.approx(expected, rel=RTOL)
    assert float(loss(labels.astype(dtype)[:, None], logits)) == pytest.approx(expected, rel=RTOL)
    vectors = rng.normal(size=(10, 3)).astype(np.float32)
    ref = CosineMSELoss()(labels.astype(np.int64), vectors)
    assert float(CosineMSELoss()(labels.astype(dtype), vectors)) == pytest.approx(float(ref), rel=RTOL)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_inputs_give_fp32_loss(dtype):
    rng = np.random.default_rng(2)
    labels = rng.choice(5, size=8)
    logits = rng.normal(size=(8, 5)).astype(np.float32)
    low = tf.cast(logits, dtype)
    got = MaskedClassifierLoss()(labels, low)
    assert got.dtype == tf.float32
    expected = np_masked_ce(labels, tf.cast(low, tf.float32).numpy())
    assert float(got) == pytest.approx(expected, rel=RTOL)
    vectors = tf.cast(rng.normal(size=(8, 4)), dtype)
    assert CosineHingeLoss()(labels, vectors).dtype == tf.float32
    assert SimilarityMatrixLoss()(vectors, vectors).dtype == tf.float32


@pytest.mark.parametrize("kind", ["binary", "nli", "mixed"])
def test_separate_heads_equal_numpy_and_masked_loss(kind):
    rng = np.random.default_rng(3)
    labels = row_labels(rng, 7, kind)
    logits = rng.normal(scale=2.0, size=(14, 5)).astype(np.float32)
    got = float(SeparateHeadsLoss()(labels, logits[:, :2], logits[:, 2:]))
    assert got == pytest.approx(np_masked_ce(labels, logits), rel=RTOL)
    assert got == pytest.approx(float(MaskedClassifierLoss()(labels, logits)), rel=RTOL)


def test_masked_loss_trains_through_keras_compile_with_int8_labels():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 6)).astype(np.float32)
    y = np.repeat(rng.choice(5, size=8), 2).astype(np.int8)
    inputs = tf.keras.Input((6,))
    outputs = tf.keras.layers.Dense(5, use_bias=False)(
        tf.keras.layers.Lambda(pair_features)(tf.keras.layers.Dense(4)(inputs)))
    model = tf.keras.Model(inputs, outputs)
    model.compile(loss=MaskedClassifierLoss(), optimizer=tf.keras.optimizers.Adam(0.05))
    history = model.fit(x, y, batch_size=16, epochs=5, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


# ----------------------------------------------------------------------------- cosine losses
@pytest.mark.parametrize("name", sorted(COSINE_LOSSES))
@pytest.mark.parametrize("kind", ["binary", "nli", "mixed"])
@pytest.mark.parametrize("pairs,hidden", [(1, 3), (5, 8), (12, 16)])
def test_cosine_losses_match_formulas(name, kind, pairs, hidden):
    rng = np.random.default_rng(pairs * hidden)
    labels = row_labels(rng, pairs, kind)
    vectors = rng.normal(size=(2 * pairs, hidden)).astype(np.float32)
    t, keep = np_targets(labels)
    per_pair = NP_COSINE[name](np_cos(vectors), t)
    expected = (keep * per_pair).sum() / keep.sum() if keep.sum() else 0.0
    got = float(COSINE_LOSSES[name]()(tf.constant(labels), tf.constant(vectors)))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_cosine_losses_at_known_points():
    same = np.array([[1.0, 0.0], [2.0, 0.0]], np.float32)        # cos = 1
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)   # cos = -1
    pos, neg = np.array([1, 1]), np.array([0, 0])
    assert float(CosineMSELoss()(pos, same)) == pytest.approx(0.0, abs=1e-6)
    assert float(CosineMSELoss()(neg, opposite)) == pytest.approx(1.0)
    assert float(CosineMSEPM1Loss()(neg, opposite)) == pytest.approx(0.0, abs=1e-6)
    assert float(CosineHingeLoss()(pos, opposite)) == pytest.approx(1.9)
    assert float(CosineHingeLoss()(neg, same)) == pytest.approx(0.9)
    neutral = np.array([4, 4])
    assert float(CosineMSELoss()(neutral, same)) == 0.0  # neutral excluded, no NaN


def test_cosine_loss_gradient_is_finite_and_matches_finite_difference():
    rng = np.random.default_rng(5)
    labels = row_labels(rng, 4, "mixed")
    x = tf.Variable(rng.normal(size=(8, 5)))
    loss = CosineMSEPM1Loss()
    with tf.GradientTape() as tape:
        value = loss(labels, x)
    grad = tape.gradient(value, x).numpy()
    assert np.all(np.isfinite(grad))
    eps, base = 1e-3, x.numpy()
    for i, j in [(0, 0), (3, 2), (7, 4)]:
        plus, minus = base.copy(), base.copy()
        plus[i, j] += eps
        minus[i, j] -= eps
        numeric = (float(loss(labels, plus)) - float(loss(labels, minus))) / (2 * eps)
        assert grad[i, j] == pytest.approx(numeric, rel=1e-2, abs=1e-4)


# ----------------------------------------------------------------------------- distillation
@pytest.mark.parametrize("batch,length,vocab", [(1, 4, 7), (3, 9, 11), (6, 12, 30)])
def test_seq2seq_loss_matches_numpy(batch, length, vocab):
    rng = np.random.default_rng(batch * length)
    tokens = rng.integers(1, vocab, size=(batch, length))
    segments = np.zeros((batch, length), np.int32)
    for b in range(batch):  # [CLS] source [SEP] | synonym [SEP] | padding
        start = rng.integers(1, length - 1)
        end = rng.integers(start + 1, length + 1)
        segments[b, start:end] = 1
        tokens[b, end:] = 0
    logits = rng.normal(size=(batch, length, vocab)).astype(np.float32)
    total, count = 0.0, 0
    for b in range(batch):
        for i in range(length - 1):
            if segments[b, i + 1]:
                total -= log_softmax(logits[b, i].astype(np.float64))[tokens[b, i + 1]]
                count += 1
    got = float(Seq2SeqLoss()(tokens, segments, logits))
    assert got == pytest.approx(total / count, rel=RTOL)
    assert float(Seq2SeqLoss()(tokens, np.zeros_like(segments), logits)) == 0.0


@pytest.mark.parametrize("batch,hs,ht,weight", [(2, 3, 5, 100.0), (8, 6, 4, 100.0), (5, 7, 7, 1.0)])
def test_similarity_matrix_loss_matches_numpy(batch, hs, ht, weight):
    rng = np.random.default_rng(batch + hs)
    student = rng.normal(size=(batch, hs)).astype(np.float32)
    teacher = rng.normal(size=(batch, ht)).astype(np.float32)

    def cos_matrix(a):
        a = a.astype(np.float64)
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        return a @ a.T

    expected = weight * np.mean((cos_matrix(student) - cos_matrix(teacher)) ** 2)
    got = float(SimilarityMatrixLoss(weight)(teacher, student))
    assert got == pytest.approx(expected, rel=1e-4)
    assert float(SimilarityMatrixLoss()(student, student)) == pytest.approx(0.0, abs=1e-5)


def test_similarity_loss_gradient_flows_to_student_only():
    rng = np.random.default_rng(6)
    student = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32))
    teacher = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = SimilarityMatrixLoss()(teacher, student)
    g_student, g_teacher = tape.gradient(value, [student, teacher])
    assert np.all(np.isfinite(g_student.numpy())) and np.abs(g_student.numpy()).sum() > 0
    assert g_teacher is None
