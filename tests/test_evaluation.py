"""Evaluation: Spearman per task, test-file reading, reports, probes and lexical baselines."""
import roformer_sim_ft.compat  # noqa: F401  (first: selects tf_keras)

import json
import math
import zlib

import numpy as np
import pytest
from scipy import stats

from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.evaluation import (
    LEXICAL_BASELINES, PROBES, TASKS, EvalResult, SimilarityEvaluator, TaskScore, char_jaccard,
    char_tfidf_scores, evaluate_scores, format_probes, format_table, load_eval_tasks,
    run_probes, spearman_x100, to_json,
)
from roformer_sim_ft.evaluation import _width


class CharHashModel:
    """Deterministic bag-of-characters encoder (crc32 buckets); records every encode call."""

    dim = 16

    def __init__(self):
        self.calls = []

    def vector(self, text):
        v = np.zeros(self.dim)
        for c in text:
            v[zlib.crc32(c.encode("utf-8")) % self.dim] += 1.0
        v[0] += 0.5  # never the zero vector
        return v

    def encode(self, texts, batch_size=64, normalize=True, show_progress_bar=None):
        self.calls.append(list(texts))
        out = np.array([self.vector(t) for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True) if normalize else out


def hand_spearman(model, rows):
    cos = [model.vector(a) @ model.vector(b) / np.linalg.norm(model.vector(a)) / np.linalg.norm(model.vector(b))
           for a, b, _ in rows]
    return stats.spearmanr(cos, [r[2] for r in rows]).statistic * 100


ATEC_ROWS = [("花呗怎么还款", "花呗如何还款", 1), ("借呗额度", "花呗分期", 0), ("花呗怎么还款", "借呗额度", 0),
             ("我的花呗", "我的花呗额度", 1), ("为什么不能用", "怎么开通借呗", 0), ("花呗如何还款", "花呗还款", 1)]
STSB_ROWS = [("一个男人在弹吉他。", "一个人在弹吉他。", 4.2), ("一只猫在睡觉。", "一个女人在跳舞。", 0.0),
             ("一架飞机要起飞了。", "一架飞机正在起飞。", 5.0), ("孩子在骑马。", "一个小孩在骑马。", 3.8),
             ("一个人在切洋葱。", "一个男人在吹笛子。", 0.6)]


def write_task(root, task, split, rows_or_text):
    path = root / "senteval_cn" / task / f"{task}.{split}.data"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = rows_or_text
    if not isinstance(data, (str, bytes)):
        data = "".join(f"{a}\t{b}\t{label}\n" for a, b, label in data)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ----------------------------------------------------------------------------- spearman + evaluator
def test_spearman_x100_is_scipy_times_100():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert spearman_x100(a, b) == pytest.approx(stats.spearmanr(a, b).statistic * 100)
    assert spearman_x100([1, 2, 3], [10, 20, 30]) == pytest.approx(100.0)
    assert math.isnan(spearman_x100([1, 1, 1], [1, 2, 3]))
    with pytest.raises(RoformerSimError):
        spearman_x100([1, 2], [1, 2, 3])


def test_evaluator_matches_hand_computation_and_reports_missing(tmp_path):
    write_task(tmp_path, "ATEC", "test", ATEC_ROWS)
    write_task(tmp_path, "STS-B", "test", STSB_ROWS)
    model = CharHashModel()
    evaluator = SimilarityEvaluator.from_dir(tmp_path, split="test", name="hash")
    result = evaluator(model)
    assert list(result.scores) == ["ATEC", "STS-B"] and result.missing == ["BQ", "LCQMC", "PAWSX"]
    expected = {"ATEC": hand_spearman(model, ATEC_ROWS), "STS-B": hand_spearman(model, STSB_ROWS)}
    for task, value in expected.items():
        assert result.scores[task].spearman == pytest.approx(value, rel=1e-9)
    assert result.scores["ATEC"].rows == 6 and result.scores["STS-B"].rows == 5
    assert result.average == pytest.approx(np.mean(list(expected.values())))
    assert result.primary_metric == result.average
    assert [p.name for p in evaluator.files] == ["ATEC.test.data", "STS-B.test.data"]
    # one encode call per task, each distinct text once
    assert len(model.calls) == 2
    assert sorted(model.calls[0]) == sorted({t for a, b, _ in ATEC_ROWS for t in (a, b)})


def test_evaluator_from_rows_and_bad_rows():
    model = CharHashModel()
    result = SimilarityEvaluator({"LCQMC": ATEC_ROWS}, batch_size=2)(model, name="x")
    assert result.name == "x" and result.scores["LCQMC"].spearman == pytest.approx(hand_spearman(model, ATEC_ROWS))
    with pytest.raises(RoformerSimError, match="row 0"):
        SimilarityEvaluator({"BQ": [("a", "b")]})
    with pytest.raises(RoformerSimError, match="not a number"):
        SimilarityEvaluator({"BQ": [("a", "b", "yes")]})


# ----------------------------------------------------------------------------- test files
def test_reader_handles_csv_quotes(tmp_path):
    write_task(tmp_path, "BQ", "valid", '"""借款失败""了解"\t1借钱失败\t1\n"a b"\tc d\t0.0\n')
    data = load_eval_tasks(tmp_path, "valid", ["BQ"])
    assert data.rows["BQ"] == [('"借款失败"了解', "1借钱失败", 1.0), ("a b", "c d", 0.0)]
    assert data.missing == [] and len(data.files) == 1


@pytest.mark.parametrize("line,message", [
    (b"a\tb\n", "expected 3 tab-separated fields"),
    (b"a\tb\tyes\n", "label 'yes' is not a number"),
    (b"a\tb\t2\n", "label 2 out of range 0..1"),
    (b"\tb\t1\n", "empty text1"),
    (b"a\xff\tb\t1\n", "invalid UTF-8"),
])
def test_bad_lines_name_file_and_line_or_are_skipped(tmp_path, line, message):
    path = write_task(tmp_path, "ATEC", "valid", b"x\ty\t1\n" + line + b"u\tv\t0\n")
    with pytest.raises(RoformerSimError) as err:
        load_eval_tasks(tmp_path, "valid", ["ATEC"])
    assert f"{path}:2: {message}" in str(err.value) and "\n" not in str(err.value)
    data = load_eval_tasks(tmp_path, "valid", ["ATEC"], skip_bad_lines=True)
    assert len(data.rows["ATEC"]) == 2 and {r.path: r.bad for r in data.reports if r.bad} == {str(path): 1}


def test_stsb_keeps_float_scores_and_range(tmp_path):
    write_task(tmp_path, "STS-B", "valid", "a\tb\t3.4\nc\td\t5\n")
    assert [r[2] for r in load_eval_tasks(tmp_path, "valid", ["STS-B"]).rows["STS-B"]] == [3.4, 5.0]
    write_task(tmp_path, "STS-B", "valid", "a\tb\t5.5\n")
    with pytest.raises(RoformerSimError, match="out of range 0..5"):
        load_eval_tasks(tmp_path, "valid", ["STS-B"])


def test_missing_data_folder_is_an_error(tmp_path):
    with pytest.raises(RoformerSimError, match="not found"):
        load_eval_tasks(tmp_path / "nope")


def test_reads_every_shared_valid_file_without_bad_lines(shared_data):
    data = load_eval_tasks(shared_data, "valid")
    assert data.missing == [] and not any(r.bad for r in data.reports)
    counts = {t: len(r) for t, r in data.rows.items()}
    assert counts == {"ATEC": 20000, "BQ": 10000, "LCQMC": 8802, "PAWSX": 2000, "STS-B": 1458}
    assert ("但“e”是粒子的磁荷，而 A 是电磁场的电矢势。", '鉴于 "e" 是粒子的电荷，A 是电磁场的磁矢势。', 0.0) in data.rows["PAWSX"]


# ----------------------------------------------------------------------------- reports
def test_format_table():
    a = EvalResult("base", {t: TaskScore(t, s, 10) for t, s in zip(TASKS, [51.714, 73.48, 79.56, 62.84, 78.28])})
    b = EvalResult("tiny", {"ATEC": TaskScore("ATEC", 5.0, 3), "STS-B": TaskScore("STS-B", -12.345, 4)},
                   missing=["BQ", "LCQMC", "PAWSX"])
    assert format_table([a, b]) == "\n".join([
        "Model   ATEC     BQ  LCQMC  PAWSX   STS-B    Avg",
        "base   51.71  73.48  79.56  62.84   78.28  69.17",
        "tiny    5.00      -      -      -  -12.35  -3.67",
        "missing (skipped): BQ, LCQMC, PAWSX",
    ])
    assert format_table(a).splitlines()[1] == "base   51.71  73.48  79.56  62.84  78.28  69.17"


def test_to_json_carries_numbers_and_fingerprints():
    r = EvalResult("m", {"BQ": TaskScore("BQ", 12.5, 7), "PAWSX": TaskScore("PAWSX", math.nan, 2)}, ["ATEC"])
    doc = json.loads(to_json(r, "abc", "def", split="valid"))
    assert doc == {"model": "m", "tasks": {"BQ": {"spearman_x100": 12.5, "rows": 7},
                                           "PAWSX": {"spearman_x100": None, "rows": 2}},
                   "average": None, "missing": ["ATEC"], "checkpoint_fingerprint": "abc",
                   "data_fingerprint": "def", "split": "valid"}


def test_probes():
    assert len(PROBES) == 10 and PROBES[0] == ("今天天气不错", "今天天气很好", 0.977)
    model = CharHashModel()
    rows = run_probes(model)
    assert len(rows) == 10 and len(model.calls) == 1 and len(model.calls[0]) == 15  # distinct texts
    for (a, b, published), row in zip(PROBES, rows):
        va, vb = model.vector(a), model.vector(b)
        assert row.ours == pytest.approx(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))
        assert (row.text1, row.text2, row.published) == (a, b, published)
    text = format_probes(rows).splitlines()
    assert len(text) == 11 and text[1].endswith("    0.977")
    assert len({_width(line) for line in text}) == 1  # columns aligned, CJK counted as two


# ----------------------------------------------------------------------------- lexical baselines
def test_char_jaccard_by_hand():
    assert char_jaccard("今天天气不错", "今天天气很好") == pytest.approx(3 / 7)  # {今天气} / {今天气不错很好}
    assert char_jaccard("abc", "bcd") == pytest.approx(2 / 4)
    assert char_jaccard("aab", "ab") == 1.0
    assert char_jaccard("ab", "cd") == 0.0 and char_jaccard("", "") == 0.0


def test_char_tfidf_by_hand():
    # documents aab, ab, b, a: n = 4, df(a) = df(b) = 3 -> equal idf, so cos = (2*1 + 1*1) / (sqrt(5) sqrt(2))
    got = char_tfidf_scores([("aab", "ab"), ("b", "a")])
    np.testing.assert_allclose(got, [3 / math.sqrt(10), 0.0])
    # documents ab, ac, a, "": n = 4, df(a) = 3, df(b) = df(c) = 1
    ia, ib = math.log(5 / 4) + 1, math.log(5 / 2) + 1
    got = char_tfidf_scores([("ab", "ac"), ("a", "")])
    np.testing.assert_allclose(got, [ia ** 2 / (ia ** 2 + ib ** 2), 0.0])


def test_evaluate_scores_with_lexical_baselines():
    rows = {"ATEC": ATEC_ROWS, "STS-B": STSB_ROWS}
    result = evaluate_scores(rows, LEXICAL_BASELINES["char-jaccard"], name="char-jaccard")
    expected = stats.spearmanr([char_jaccard(a, b) for a, b, _ in STSB_ROWS], [r[2] for r in STSB_ROWS])
    assert result.scores["STS-B"].spearman == pytest.approx(expected.statistic * 100)
    tfidf = evaluate_scores(rows, LEXICAL_BASELINES["char-tfidf"], name="char-tfidf")
    assert set(tfidf.scores) == {"ATEC", "STS-B"} and all(math.isfinite(s.spearman) for s in tfidf.scores.values())
    with pytest.raises(RoformerSimError, match="shape"):
        evaluate_scores(rows, lambda pairs: [0.0])


def test_char_tfidf_identical_multisets_score_exactly_one():
    """Sums are exact and order-free, so ties rank the same whatever PYTHONHASHSEED is."""
    from roformer_sim_ft.evaluation import char_tfidf_scores

    pairs = [("我喜欢北京天气", "天气北京喜欢我"), ("今天好", "好今天"), ("abcdefg人民", "人民gfedcba")] * 5
    assert list(char_tfidf_scores(pairs)) == [1.0] * 15
