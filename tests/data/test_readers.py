"""Tests of roformer_sim_ft.data.readers and .batches: readers and their bad-line policy, folder discovery,
SupervisedBatches and DistillBatches (interleaving, rows, masking, resumable state)."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roformer_sim_ft.data import batches as B, readers as R  # first: selects tf_keras before tensorflow loads
from roformer_sim_ft.errors import RoformerSimError

from bert4keras.snippets import text_segmentate  # noqa: E402


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


GOOD = "今天天气不错\t今天天气很好\t1\n"


# ---------------------------------------------------------------- senteval reader


@pytest.mark.parametrize("line, task, what", [
    ("只有一列\t1\n", "ATEC", "expected 3 tab-separated fields (text1, text2, label), got 2"),
    ("a\tb\t1\textra\n", "ATEC", "expected 3 tab-separated fields (text1, text2, label), got 4"),
    ("你好\t您好\tyes\n", "ATEC", "label 'yes' is not a number"),
    ("你好\t您好\t\n", "ATEC", "label '' is not a number"),
    ("你好\t您好\t2\n", "ATEC", "label 2 out of range 0..1 for task ATEC"),
    ("你好\t您好\t-1\n", "BQ", "label -1 out of range 0..1 for task BQ"),
    ("你好\t您好\t5.5\n", "STS-B", "label 5.5 out of range 0..5 for task STS-B"),
    ("你好\t您好\tnan\n", "STS-B", "label nan out of range 0..5 for task STS-B"),
    ("   \t您好\t1\n", "LCQMC", "empty text1"),
    ("你好\t，，；\t1\n", "LCQMC", "empty text2"),
    ("\n", "PAWSX", "empty line"),
    ('"未闭合的引号\t您好\t1\n', "PAWSX", "bad CSV quoting"),
])
def test_senteval_bad_line_names_file_and_line(tmp_path, line, task, what):
    path = write(tmp_path / task / f"{task}.train.data", GOOD + line + GOOD)
    with pytest.raises(RoformerSimError) as e:
        R.read_senteval(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:2: "), msg
    assert what in msg
    assert "\n" not in msg


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path / "ATEC.valid.data", GOOD.encode() + b"\xff\xfe bad\tx\t1\n")
    with pytest.raises(RoformerSimError, match=r"ATEC\.valid\.data:2: invalid UTF-8"):
        R.read_senteval(path)
    path = write(tmp_path / "x.jsonl", b'{"sentence1": "\xe4\xbd", "sentence2": "b", "gold_label": "neutral"}\n')
    with pytest.raises(RoformerSimError, match=r"x\.jsonl:1: invalid UTF-8"):
        R.read_nli(path)


def test_skip_bad_lines_counts_per_file(tmp_path):
    body = GOOD.encode() + b"x\t1\n" + GOOD.encode() + "甲\t乙\tz\n".encode() + b"\xff\n" + GOOD.encode()
    path = write(tmp_path / "BQ.train.data", body)
    pairs, report = R.read_senteval(path, skip_bad_lines=True)
    assert len(pairs) == report.kept == 3
    assert report.bad == 3
    assert [m.split(": ")[0] for m in report.errors] == [f"{path}:2", f"{path}:4", f"{path}:5"]
    assert "3 kept, 3 bad lines skipped" in report.summary()


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(RoformerSimError, match="no such file"):
        R.read_senteval(tmp_path / "nope.data")


def test_threshold_per_task_and_override(tmp_path):
    sts = write(tmp_path / "STS-B.train.data", "".join(f"甲{i}\t乙{i}\t{s}\n" for i, s in
                                                      enumerate(["0", "2", "2.5", "2.6", "5"])))
    assert [p.label for p in R.read_senteval(sts)[0]] == [0, 0, 0, 1, 1]
    assert [p.label for p in R.read_senteval(sts, threshold=1.5)[0]] == [0, 1, 1, 1, 1]
    binary = write(tmp_path / "ATEC.train.data", "".join(f"甲{i}\t乙{i}\t{s}\n" for i, s in
                                                        enumerate(["0", "1", "0.5", "0.6"])))
    assert [p.label for p in R.read_senteval(binary)[0]] == [0, 1, 0, 1]
    # thresholds by task through the loader
    data = R.load_supervised_data(senteval_files=[sts, binary], thresholds={"STS-B": 4.5})
    assert [p.label for p in data.binary] == [0, 0, 0, 0, 1, 0, 1, 0, 1]
    assert R.task_spec("STS-B") == R.TaskSpec("STS-B", 2.5, (0.0, 5.0))
    assert R.task_spec("PAWSX").threshold == 0.5


def test_scored_reader_keeps_scores_and_whole_texts(tmp_path):
    long_text = "这是一个很长的句子，" * 12
    path = write(tmp_path / "STS-B.valid.data", f"甲\t乙\t3.8\n{long_text}\t乙\t0\n")
    scored, _ = R.read_senteval_scored(path)
    assert [s.score for s in scored] == [3.8, 0.0]
    assert scored[1].text1 == long_text  # not cut: evaluation encodes whole texts
    cut, _ = R.read_senteval_scored(path, maxlen=64)
    assert len(cut[1].text1) <= 64 * 1.2


def test_bom_inside_field_is_kept(tmp_path):
    path = write(tmp_path / "LCQMC.train.data", "\ufeff怎么办 \t如何\ufeff处理\t1\n中国\t\ufeff 中华\t0\n")
    pairs, _ = R.read_senteval(path)
    assert pairs[0].text1 == "\ufeff怎么办"
    assert pairs[0].text2 == "如何\ufeff处理"
    assert pairs[1].text2 == "\ufeff 中华"


def test_csv_quoted_fields(tmp_path):
    path = write(tmp_path / "ATEC.train.data",
                 '"""没有""""花呗"""\t我的支付宝为什么没有花呗\t1\n'
                 '为什么\t"显示""审批失败""是为什么"\t0\n'
                 '中间"引号\t不用引用\t1\n')
    pairs, _ = R.read_senteval(path)
    assert pairs[0].text1 == '"没有""花呗"'
    assert pairs[1].text2 == '显示"审批失败"是为什么'
    assert pairs[2].text1 == '中间"引号'


def test_text_cut_like_reference():
    text = "第一句话说的是今天天气很好适合出门散步" * 3 + "。" + "第二句话" * 20
    assert R.cut_text(text) == text_segmentate(text, 64 * 1.2, "\n。！？!?；;，, ", "；;，, ")[0]
    assert R.cut_text(text).endswith("。")
    assert R.cut_text("，  你好；") == "你好"
    assert R.cut_text("  ，；  ") == ""


# ---------------------------------------------------------------- NLI reader


def nli_line(s1="一个人在跑步", s2="有人在运动", gold="entailment", **extra):
    return json.dumps({"sentence1": s1, "sentence2": s2, "gold_label": gold, **extra},
                      ensure_ascii=False) + "\n"


def test_nli_labels_and_dash_counted(tmp_path):
    body = ("\ufeff" + nli_line(gold="contradiction") + nli_line() + nli_line(gold="neutral")
            + nli_line(gold="-") + nli_line(gold="") )
    pairs, report = R.read_nli(write(tmp_path / "cnsd.jsonl", body))
    assert [p.label for p in pairs] == [2, 3, 4]
    assert report.unlabeled == 2 and report.bad == 0 and report.kept == 3
    assert "2 without a gold label skipped" in report.summary()


@pytest.mark.parametrize("line, what", [
    ('{"sentence1": "a", "sentence2": \n', "bad JSON"),
    ('["a", "b", "neutral"]\n', "expected a JSON object, got list"),
    ('{"sentence1": "a", "gold_label": "neutral"}\n', "missing key 'sentence2'"),
    ('{"sentence1": "a", "sentence2": "b"}\n', "missing key 'gold_label'"),
    ('{"sentence1": 3, "sentence2": "b", "gold_label": "neutral"}\n', "'sentence1' is not a string"),
    (nli_line(s2=" ，"), "empty sentence2"),
    ("\n", "empty line"),
])
def test_nli_bad_lines(tmp_path, line, what):
    path = write(tmp_path / "nli.jsonl", nli_line() + nli_line() + line + nli_line())  # a blank last line is normal
    with pytest.raises(RoformerSimError) as e:
        R.read_nli(path)
    assert str(e.value).startswith(f"{path}:3: ") and what in str(e.value)
    pairs, report = R.read_nli(path, skip_bad_lines=True)
    assert (len(pairs), report.bad) == (3, 1)


# ---------------------------------------------------------------- synonyms reader


def test_synonym_reader_both_formats(tmp_path):
    path = write(tmp_path / "syn.jsonl",
                 json.dumps({"text": "微信和支付宝哪个好？", "synonyms": ["支付宝和微信哪个好", "微信支付宝选哪个"]},
                            ensure_ascii=False) + "\n"
                 + json.dumps({"text_a": "推荐一辆红车", "text_b": "给我推荐一款红色的车"}, ensure_ascii=False) + "\n")
    groups, report = R.read_synonyms(path)
    assert groups[0] == R.SynonymGroup(("微信和支付宝哪个好？", "支付宝和微信哪个好", "微信支付宝选哪个"), False)
    assert groups[1] == R.SynonymGroup(("推荐一辆红车", "给我推荐一款红色的车"), True)
    assert report.kept == 2


@pytest.mark.parametrize("obj, what", [
    ({"text": "a", "synonyms": []}, "'synonyms' must be a non-empty list of strings"),
    ({"text": "a", "synonyms": "b"}, "'synonyms' must be a non-empty list of strings"),
    ({"text": "a"}, "missing key 'synonyms'"),
    ({"text": "a", "synonyms": ["b", 1]}, "'synonyms'[1] is not a string"),
    ({"text": "a", "synonyms": ["b", "  "]}, "empty 'synonyms'[1]"),
    ({"text_a": "a"}, "missing key 'text_b'"),
    ({"text_a": "", "text_b": "b"}, "empty 'text_a'"),
    ({"query": "a"}, "expected keys 'text' and 'synonyms', or 'text_a' and 'text_b'"),
])
def test_synonym_bad_lines(tmp_path, obj, what):
    path = write(tmp_path / "syn.jsonl", json.dumps({"text_a": "甲", "text_b": "乙"}) + "\n" + json.dumps(obj) + "\n")
    with pytest.raises(RoformerSimError) as e:
        R.read_synonyms(path)
    assert str(e.value) == f"{path}:2: {what}"
    data = R.load_distill_pairs([path], skip_bad_lines=True)
    assert len(data.groups) == 1 and data.bad == 1


# ---------------------------------------------------------------- folders


def test_find_data_files_layout(tmp_path):
    root = tmp_path / "data"
    write(root / "senteval_cn/ATEC/ATEC.train.partial.data", GOOD)
    write(root / "senteval_cn/ATEC/ATEC.train.from_afqmc.data", GOOD)
    write(root / "senteval_cn/ATEC/ATEC.valid.data", GOOD)
    write(root / "senteval_cn/BQ/BQ.train.data", GOOD)
    write(root / "senteval_cn/BQ/BQ.train.extra.data", GOOD)  # exact name wins: not read
    write(root / "senteval_cn/BQ/BQ.trainx.data", GOOD)  # not a variant of 'train'
    write(root / "senteval_cn/SOHU21-SSB/SOHU21-SSB.train.data", GOOD)
    write(root / "cnsd/cnsd-snli/a.jsonl", nli_line())
    found = R.find_data_files(root, splits=("train", "valid"))
    names = sorted(f.path.name for f in found.senteval)
    assert names == ["ATEC.train.from_afqmc.data", "ATEC.train.partial.data", "ATEC.valid.data",
                     "BQ.train.data", "SOHU21-SSB.train.data"]
    assert [p.name for p in found.nli] == ["a.jsonl"]
    assert "senteval_cn/BQ/BQ.valid.data" in found.missing
    assert "senteval_cn/STS-B/STS-B.train.data" in found.missing
    assert not any("SOHU" in m for m in found.missing)
    data = R.load_supervised_data(root, splits=("train", "valid"))
    assert len(data.binary) == 5 and len(data.nli) == 1 and data.missing == found.missing


def test_find_data_files_errors(tmp_path):
    with pytest.raises(RoformerSimError, match="data folder not found"):
        R.find_data_files(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RoformerSimError, match="no data files"):
        R.find_data_files(tmp_path / "empty")
    with pytest.raises(RoformerSimError, match="no data"):
        R.load_supervised_data()


def test_explicit_file_lists_and_positive_pairs(tmp_path):
    sts = write(tmp_path / "STS-B.test.data", "甲\t乙\t4\n丙\t丁\t1\n")
    nli = write(tmp_path / "n.jsonl", nli_line() + nli_line(gold="neutral"))
    data = R.load_supervised_data(senteval_files=[sts], nli_files=[nli])
    assert [p.label for p in data.binary] == [1, 0] and [p.label for p in data.nli] == [3, 4]
    assert R.positive_pairs(data) == [R.SynonymGroup(("甲", "乙"), True),
                                      R.SynonymGroup(("一个人在跑步", "有人在运动"), True)]


def test_sample_data_is_clean_and_complete(sample_data):
    root = R.sample_data_dir()
    assert sample_data.missing == [] and sample_data.bad == 0
    tasks = {r.path.split("/senteval_cn/")[1].split("/")[0] for r in sample_data.reports if "senteval_cn" in r.path}
    assert tasks == set(R.DEFAULT_TASKS)
    assert len(sample_data.binary) >= 400 and len(sample_data.nli) >= 50
    assert sum(r.unlabeled for r in sample_data.reports) >= 2  # the sample has '-' lines
    for r in sample_data.reports:
        assert r.kept >= 19, r.summary()
    sts, _ = R.read_senteval_scored(root / "senteval_cn/STS-B/STS-B.valid.data")
    assert {s.score for s in sts} == {0, 1, 2, 3, 4, 5}
    distill = R.load_distill_pairs([root / "synonyms/sample.jsonl"], labeled_dir=root)
    assert distill.bad == 0 and len(distill.groups) > 200
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert size < 300_000


# ---------------------------------------------------------------- SupervisedBatches


def test_supervised_batches_rows_and_interleaving(sample_data, tokenizer):
    b = B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=16, seed=3)
    pairs = b.pairs_at(0)
    batch = next(b)
    assert batch["token_ids"].dtype == np.int32 and batch["labels"].shape == (16,)
    assert batch["token_ids"].shape == batch["segment_ids"].shape and batch["token_ids"].shape[0] == 16
    assert not batch["segment_ids"].any()
    # 1:1: binary (0/1) and NLI (2/3/4) pairs alternate, starting with binary
    assert [p.label >= 2 for p in pairs] == [False, True] * 4
    for k, pair in enumerate(pairs):
        assert batch["labels"][2 * k] == batch["labels"][2 * k + 1] == pair.label
        for row, text in ((2 * k, pair.text1), (2 * k + 1, pair.text2)):
            ids, _ = tokenizer.encode(text, maxlen=64)
            assert batch["token_ids"][row, :len(ids)].tolist() == ids
            assert not batch["token_ids"][row, len(ids):].any()


def test_supervised_each_pass_is_a_fresh_permutation(tokenizer):
    binary = [R.LabeledPair(f"甲{i}", f"乙{i}", i % 2) for i in range(6)]
    nli = [R.LabeledPair(f"丙{i}", f"丁{i}", 2 + i % 3) for i in range(4)]
    b = B.SupervisedBatches(binary, nli, tokenizer, batch_size=4, seed=0)
    seen = [p for i in range(12) for p in b.pairs_at(i)]  # 24 samples: 12 binary, 12 NLI
    bin_seen, nli_seen = seen[0::2], seen[1::2]
    assert sorted(bin_seen[:6], key=binary.index) == binary and sorted(bin_seen[6:], key=binary.index) == binary
    for k in range(3):
        assert sorted(nli_seen[4 * k:4 * k + 4], key=nli.index) == nli
    assert bin_seen[:6] != bin_seen[6:] or nli_seen[:4] != nli_seen[4:8]
    other = B.SupervisedBatches(binary, nli, tokenizer, batch_size=4, seed=1)
    assert [p for i in range(12) for p in other.pairs_at(i)] != seen


def test_supervised_single_source(tokenizer):
    nli = [R.LabeledPair(f"丙{i}", f"丁{i}", 3) for i in range(5)]
    b = B.SupervisedBatches([], nli, tokenizer, batch_size=6)
    assert all(p.label == 3 for i in range(4) for p in b.pairs_at(i))
    assert next(b)["labels"].tolist() == [3] * 6
    with pytest.raises(RoformerSimError, match="no examples"):
        B.SupervisedBatches([], [], tokenizer)
    with pytest.raises(RoformerSimError, match="even"):
        B.SupervisedBatches([], nli, tokenizer, batch_size=7)


def test_supervised_state_resumes_exactly(sample_data, tokenizer, assert_batches_equal):
    make = lambda: B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=32, seed=7)  # noqa: E731
    straight = [next(b) for b in [make()] for _ in range(40)][-8:]  # 40 batches: several NLI passes
    first = make()
    for _ in range(32):
        next(first)
    state = json.loads(json.dumps(first.state()))
    assert state["batches"] == 32 and state["seed"] == 7
    assert state["sources"][1]["pass"] >= 1  # 32*16/2 = 256 NLI samples > 66
    resumed = make()
    resumed.restore(state)
    assert_batches_equal([next(resumed) for _ in range(8)], straight)
    # advance() (for batches consumed through dataset()) gives the same state as next()
    skipper = make()
    skipper.advance(32)
    assert skipper.state() == first.state()


def test_state_mismatch_is_an_error(sample_data, tokenizer):
    b = B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=32)
    state = b.state()
    with pytest.raises(RoformerSimError, match="batch_size 32, not 16"):
        B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=16).restore(state)
    with pytest.raises(RoformerSimError, match="does not match the data"):
        B.SupervisedBatches(sample_data.binary[:-1], sample_data.nli, tokenizer, batch_size=32).restore(state)
    with pytest.raises(RoformerSimError, match="malformed"):
        b.restore({"kind": "supervised"})
    with pytest.raises(RoformerSimError, match="not distill"):
        B.DistillBatches([R.SynonymGroup(("a", "b"), True)], tokenizer, batch_size=32).restore(state)


def test_dataset_prefetch_does_not_move_state(sample_data, tokenizer, assert_batches_equal):
    import tensorflow as tf

    b = B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=8, seed=2)
    next(b)
    ds = b.dataset()
    assert ds.element_spec["token_ids"] == tf.TensorSpec((None, None), tf.int32, name="token_ids")
    assert ds.element_spec["labels"].shape.as_list() == [None]
    it = iter(ds)
    got = [{k: v.numpy() for k, v in next(it).items()} for _ in range(3)]
    assert b.position == 1  # prefetching ran ahead; the object did not move
    assert_batches_equal(got, [b.batch_at(i) for i in (1, 2, 3)])
    b.advance(3)  # the loop consumed three batches
    resumed = B.SupervisedBatches.from_data(sample_data, tokenizer, batch_size=8, seed=2)
    resumed.restore(b.state())
    assert_batches_equal([next(resumed)], [{k: v.numpy() for k, v in next(it).items()}])


# ---------------------------------------------------------------- DistillBatches


def test_distill_rows_both_directions_segments_teacher(tokenizer):
    groups = [R.SynonymGroup(("今天天气不错", "今天天气很好"), True),
              R.SynonymGroup(("我喜欢北京", "我很喜欢北京", "北京我挺喜欢"), False)]
    b = B.DistillBatches(groups, tokenizer, batch_size=8, seed=1, source_mask_prob=0.0)
    pairs = b.texts_at(0)
    batch = next(b)
    assert set(batch) == {"student_token_ids", "student_segment_ids", "teacher_token_ids", "teacher_segment_ids"}
    assert batch["student_token_ids"].shape[0] == 8 and batch["student_token_ids"].dtype == np.int32
    assert not batch["teacher_segment_ids"].any()
    for k, (text, synonym) in enumerate(pairs):
        if text in groups[0].texts:
            assert (text, synonym) == groups[0].texts
        else:
            assert text != synonym and {text, synonym} <= set(groups[1].texts)
        for row, (src, tgt) in ((2 * k, (text, synonym)), (2 * k + 1, (synonym, text))):
            expected = tokenizer.encode(src)[0] + tokenizer.encode(tgt)[0][1:]
            n = len(expected)
            n_src = len(tokenizer.encode(src)[0])
            assert batch["student_token_ids"][row, :n].tolist() == expected
            assert not batch["student_token_ids"][row, n:].any()
            assert batch["student_segment_ids"][row, :n].tolist() == [0] * n_src + [1] * (n - n_src)
            teacher = tokenizer.encode(src, maxlen=64)[0]
            assert batch["teacher_token_ids"][row, :len(teacher)].tolist() == teacher


def test_distill_truncates_to_twice_maxlen(tokenizer):
    a, b = "春" * 100, "秋" * 99
    batches = B.DistillBatches([R.SynonymGroup((a, b), True)], tokenizer, batch_size=2,
                               source_mask_prob=0.0)
    batch = next(batches)
    ids = batch["student_token_ids"]
    assert ids.shape == (2, 128)
    cls, sep = tokenizer._token_start_id, tokenizer._token_end_id
    a_id, b_id = tokenizer.token_to_id("春"), tokenizer.token_to_id("秋")
    # truncate_sequences(128, -2, src, tgt) pops from the longer before its [SEP]: 64 + 64
    assert ids[0].tolist() == [cls] + [a_id] * 62 + [sep] + [b_id] * 63 + [sep]
    assert batch["student_segment_ids"][0].tolist() == [0] * 64 + [1] * 64
    assert batch["teacher_token_ids"].shape == (2, 64)
    assert batch["teacher_token_ids"][0, -1] == sep


def test_masked_encode_rates(tokenizer, sample_groups):
    b = B.DistillBatches(sample_groups, tokenizer, seed=0)
    texts = sorted({t for g in sample_groups for t in g.texts})
    rng = np.random.default_rng(123)
    mask_id, vocab = tokenizer._token_mask_id, tokenizer._vocab_size
    counts = {"mask": 0, "random": 0, "same": 0}
    randoms = []
    for _ in range(6):
        for text in texts:
            words = B._get_jieba().lcut(text)
            per_word = [tokenizer.encode(w)[0][1:-1] for w in words]
            out = b.masked_encode(text, rng)
            flat = [i for ids in per_word for i in ids]
            assert len(out) == len(flat) + 2 and out[0] == tokenizer._token_start_id
            pos = 1
            for ids in per_word:
                got = out[pos:pos + len(ids)]
                pos += len(ids)
                if not ids:
                    continue
                if got == ids:
                    counts["same"] += 1
                elif all(i == mask_id for i in got):
                    counts["mask"] += 1
                else:
                    counts["random"] += 1
                    randoms += got
    n = sum(counts.values())
    assert n > 3000
    assert 0.10 < counts["mask"] / n < 0.14  # 0.15 * 0.8
    assert 0.007 < counts["random"] / n < 0.025  # 0.15 * 0.1
    assert min(randoms) >= 1 and max(randoms) <= vocab - 1


def test_masked_source_half_of_the_rows(tokenizer, sample_groups):
    # every word selected: a masked row almost surely differs from the plain encoding
    b = B.DistillBatches(sample_groups, tokenizer, batch_size=96, seed=5, word_mask_prob=1.0)
    changed = total = 0
    for i in range(5):
        batch = b.batch_at(i)
        pairs = b.texts_at(i)
        for k, (text, synonym) in enumerate(pairs):
            for row, src in ((2 * k, text), (2 * k + 1, synonym)):
                n_src = int(np.argmax(batch["student_segment_ids"][row] == 1))
                source = batch["student_token_ids"][row, :n_src].tolist()
                plain = tokenizer.encode(src)[0]
                assert len(source) == len(plain)  # sample texts are short: no truncation
                changed += source != plain
                total += 1
                assert batch["teacher_token_ids"][row, :len(plain)].tolist() == plain
    assert total == 480
    assert 0.42 < changed / total < 0.58


def test_distill_state_resumes_exactly(tokenizer, sample_groups, assert_batches_equal):
    make = lambda: B.DistillBatches(sample_groups, tokenizer, batch_size=16, seed=9)  # noqa: E731
    straight = [b.batch_at(i) for b in [make()] for i in range(10, 13)]
    first = make()
    for _ in range(10):
        next(first)
    resumed = make()
    resumed.restore(json.loads(json.dumps(first.state())))
    assert_batches_equal([next(resumed) for _ in range(3)], straight)
    passes, pos = divmod(13 * 8, len(sample_groups))
    assert resumed.state()["sources"] == [{"size": len(sample_groups), "pass": passes, "pos": pos}]
    ds = make().dataset()
    assert set(ds.element_spec) == {"student_token_ids", "student_segment_ids",
                                    "teacher_token_ids", "teacher_segment_ids"}


# ---------------------------------------------------------------- the real shared data


def test_shared_data_smoke(shared_data, real_vocab):
    from roformer_sim_ft.model import make_tokenizer

    tokenizer = make_tokenizer(real_vocab)
    data = R.load_supervised_data(shared_data, splits=("train", "valid"))  # strict: every line is valid
    names = {Path(r.path).name for r in data.reports}
    assert {"ATEC.train.partial.data", "ATEC.train.from_afqmc.data", "STS-B.valid.data"} <= names
    assert not any(n.startswith(("LCQMC.test", "ATEC.test")) for n in names)
    assert len(data.binary) > 50_000 and len(data.nli) > 1_000 and data.bad == 0
    b = B.SupervisedBatches.from_data(data, tokenizer, seed=0)
    batch = next(b)
    assert batch["token_ids"].shape[0] == 192 and batch["token_ids"].shape[1] <= 64
    assert set(batch["labels"][0::4].tolist()) <= {0, 1} and set(batch["labels"][2::4].tolist()) <= {2, 3, 4}


# The readers are pure Python: importing them loads no TensorFlow, and their text cutting is bert4keras's.
def test_importing_the_readers_does_not_import_tensorflow():
    code = ("import sys, roformer_sim_ft.data.readers as r; r.load_supervised_data(r.sample_data_dir()); "
            "print(sorted(m for m in ('tensorflow', 'bert4keras', 'tf_keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_text_segmentate_equals_bert4keras():
    rng = random.Random(0)
    alphabet = "ab，。！？；;, \n中文字"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        for maxlen in (5, 12, 76.8):
            assert R.text_segmentate(text, maxlen, R.SEPS, R.STRIPS) == \
                text_segmentate(text, maxlen, R.SEPS, R.STRIPS), (text, maxlen)
