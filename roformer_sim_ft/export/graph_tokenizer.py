"""Tokenisation in the TensorFlow graph, giving the token ids of bert4keras's ``Tokenizer``.

A SavedModel that takes raw strings must tokenise inside the graph. This
module rebuilds the rules of ``bert4keras.tokenizers.Tokenizer(vocab,
do_lower_case=True).encode(text, maxlen=maxlen)`` from ``tf.strings`` and
``tensorflow_text`` ops:

1. lower-case (``tf.strings.lower``, full Unicode mappings as ``str.lower``),
   NFD, drop every combining mark (category Mn);
2. per character: punctuation and CJK characters become words of their own,
   white space separates words, NUL, U+FFFD and control/format characters
   (Cc, Cf) are dropped, and the rest stays in the word;
3. each word is split by greedy longest-match WordPiece (``##`` suffixes);
   a word that cannot be split, or is longer than ``word_maxlen`` characters,
   is one ``[UNK]``;
4. ``[CLS]`` + the first ``maxlen - 2`` pieces + ``[SEP]``.

The character classes of step 2 are not written out by hand: they are
computed once, over every code point, from bert4keras's own predicates
(``_is_punctuation``, ``_is_cjk_character``, ``_is_space``, ``_is_control``)
and Python's ``unicodedata``, and stored in the graph as regular expressions.
``tensorflow_text`` out of the box (``BertTokenizer``) differs from bert4keras
in several places (``case_fold_utf8`` applies NFKC, so full-width letters
change; controls become spaces instead of vanishing; its own punctuation and
CJK ranges; a byte cap per word instead of bert4keras's character cap), which
is why only its WordPiece op and NFD normaliser are used: the classic ops of
its ``BertTokenizer`` (``WordpieceTokenizeWithOffsets``, ``NormalizeUTF8``),
not the ``Fast*`` ones that some TensorFlow Serving builds lack.

``tensorflow_text`` is optional (``pip install roformer-sim-ft[serving]``);
:func:`unavailable_reason` says why this module cannot be used.

The way back, :class:`GraphDetokenizer`, writes ids as text as bert4keras's
``Tokenizer.decode`` does (CJK characters joined without spaces); it needs
``tf.strings`` only.

Example:
    >>> tokenizer = GraphTokenizer(model.vocab, maxlen=64)
    >>> tokenizer(tf.constant(["今天天气不错"]))   # int32 [1, 8], 0-padded
"""
from __future__ import annotations

import functools
import importlib.util
import sys
import unicodedata
from typing import Sequence

import numpy as np

from .. import compat  # noqa: F401  (must precede tensorflow)
import tensorflow as tf

from ..errors import RoformerSimError
from ..settings import MAXLEN

WORD_MAXLEN = 200  # bert4keras Tokenizer's default word_maxlen
UNK, CLS, SEP = "[UNK]", "[CLS]", "[SEP]"
_SURROGATES = range(0xD800, 0xE000)


def unavailable_reason() -> str | None:
    """None when the in-graph tokenizer can be built, else one line saying why not."""
    if importlib.util.find_spec("tensorflow_text") is None:
        return "tensorflow_text is not installed (pip install roformer-sim-ft[serving])"
    return None


def _char_class(codes: list[int]) -> str:
    """An RE2 character class matching exactly ``codes`` (sorted, no surrogates)."""
    ranges, start, prev = [], None, None
    for c in codes:
        if start is None:
            start = prev = c
        elif c == prev + 1:
            prev = c
        else:
            ranges.append((start, prev))
            start = prev = c
    if start is not None:
        ranges.append((start, prev))
    parts = [f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


@functools.lru_cache(maxsize=1)
def char_classes() -> dict[str, str]:
    """RE2 classes over all code points, from bert4keras's predicates (see the module docstring).

    ``mark``: removed after NFD (category Mn); ``alone``: a word by itself
    (punctuation, CJK); ``space``: separates words (bert4keras's spaces, and
    the characters ``str.split`` splits on that survive its loop, U+2028/9);
    ``drop``: removed (NUL, U+FFFD, Cc, Cf). For :class:`GraphDetokenizer`: ``digit``
    (``\\d`` of Python's ``re``: category Nd) and ``strip`` (``str.isspace``, what ``str.strip`` removes).
    """
    from bert4keras.tokenizers import Tokenizer

    groups: dict[str, list[int]] = {"mark": [], "alone": [], "space": [], "drop": [], "digit": [], "strip": []}
    for code in range(sys.maxunicode + 1):
        if code in _SURROGATES:
            continue
        ch = chr(code)
        if unicodedata.category(ch) == "Mn":
            groups["mark"].append(code)
        if unicodedata.category(ch) == "Nd":
            groups["digit"].append(code)
        if ch.isspace():
            groups["strip"].append(code)
        if Tokenizer._is_punctuation(ch) or Tokenizer._is_cjk_character(ch):
            groups["alone"].append(code)
        elif Tokenizer._is_space(ch):
            groups["space"].append(code)
        elif code in (0, 0xFFFD) or Tokenizer._is_control(ch):
            groups["drop"].append(code)
        elif ch.isspace():
            groups["space"].append(code)
    return {name: _char_class(codes) for name, codes in groups.items()}


class GraphTokenizer(tf.Module):
    """Strings → bert4keras token ids, as TensorFlow ops (saveable in a SavedModel).

    Args:
        vocab: tokens, id = position (the checkpoint's ``vocab.txt``).
        maxlen: length cap including ``[CLS]`` and ``[SEP]`` (``SimModel.maxlen``).
        word_maxlen: a longer word (in characters) is one ``[UNK]``, as bert4keras.

    Example:
        >>> tokenizer = GraphTokenizer(vocab)
        >>> ids = tokenizer(tf.constant(["今天天气不错", "Café!"]))  # int32 [2, len], 0-padded
    """

    def __init__(self, vocab: Sequence[str], maxlen: int = MAXLEN, word_maxlen: int = WORD_MAXLEN) -> None:
        super().__init__(name="graph_tokenizer")
        import tensorflow_text as tf_text

        vocab = list(vocab)
        for token in (UNK, CLS, SEP):
            if token not in vocab:
                raise RoformerSimError(f"vocab lacks {token}: the in-graph tokenizer needs it")
        if maxlen < 2:
            raise RoformerSimError(f"maxlen must be at least 2 ([CLS] and [SEP]), got {maxlen}")
        self.maxlen = int(maxlen)
        self.word_maxlen = int(word_maxlen)
        last = {token: i for i, token in enumerate(vocab)}
        self.cls_id, self.sep_id = last[CLS], last[SEP]
        self.classes = char_classes()
        # Unique keys, each at its last line as in bert4keras's token dict.
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(last), tf.string), tf.constant(list(last.values()), tf.int64)
            ),
            default_value=-1,
        )
        # max_bytes_per_word: every word of at most word_maxlen characters must reach the WordPiece
        # search (a UTF-8 character is at most 4 bytes); longer words are replaced by [UNK] first.
        self.wordpiece = tf_text.WordpieceTokenizer(
            self.table,
            suffix_indicator="##",
            max_bytes_per_word=4 * self.word_maxlen,
            max_chars_per_token=max(len(t[2:] if t.startswith("##") else t) for t in vocab),
            token_out_type=tf.int64,
            unknown_token=UNK,
        )

    def words(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """The words of each text after normalisation and splitting: ragged string [batch, words]."""
        import tensorflow_text as tf_text

        # NUL is dropped anyway; removed first because the lower-casing op stops at it.
        texts = tf.strings.regex_replace(tf.convert_to_tensor(texts, tf.string), "\\x00", "")
        texts = tf.strings.lower(texts, encoding="utf-8")
        texts = tf_text.normalize_utf8(texts, "NFD")
        texts = tf.strings.regex_replace(texts, self.classes["mark"], "")
        texts = tf.strings.regex_replace(texts, self.classes["drop"], "")
        texts = tf.strings.regex_replace(texts, self.classes["space"], " ")
        texts = tf.strings.regex_replace(texts, self.classes["alone"], r" \0 ")
        words = tf.strings.split(texts, sep=" ")
        return tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)

    def pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """WordPiece ids without [CLS]/[SEP] or truncation: ragged int32 [batch, tokens]."""
        words = self.words(texts)
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > self.word_maxlen
        words = words.with_flat_values(tf.where(too_long, UNK, words.flat_values))
        return tf.cast(self.wordpiece.tokenize(words).merge_dims(1, 2), tf.int32)

    def __call__(self, texts: tf.Tensor) -> tf.Tensor:
        """Token ids int32 [batch, length]: ``[CLS]`` + the first ``maxlen - 2`` pieces + ``[SEP]``, 0-padded."""
        pieces = self.pieces(texts)[:, : self.maxlen - 2]
        rows = pieces.nrows()
        cls = tf.fill([rows, 1], tf.constant(self.cls_id, tf.int32))
        sep = tf.fill([rows, 1], tf.constant(self.sep_id, tf.int32))
        ids = tf.concat([tf.RaggedTensor.from_tensor(cls), pieces, tf.RaggedTensor.from_tensor(sep)], axis=1)
        return ids.to_tensor(0)


class GraphDetokenizer(tf.Module):
    """Token ids → text as bert4keras's ``Tokenizer.decode``, as TensorFlow ops (saveable in a SavedModel).

    Tokens like ``[CLS]`` are dropped; ``##x`` joins on as ``x``; a single CJK
    character or punctuation mark is written as is (punctuation followed by a
    space); any other token follows a space unless the text so far ends in a
    CJK character. Then bert4keras's clean-up: runs of spaces become one,
    ``' s``-style contractions and the spaces after CJK punctuation and
    ``+-/={(<[`` are closed up, ``1. 5`` becomes ``1.5``, ends are stripped.
    The character classes come from bert4keras's own predicates and Python's
    ``unicodedata`` (:func:`char_classes`).

    Args:
        vocab: tokens, id = position.

    Example:
        >>> detokenizer = GraphDetokenizer(vocab)
        >>> detokenizer(tf.constant([[791, 1921, 102, 0]]))  # string [1]; mask= picks ids to decode
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        super().__init__(name="graph_detokenizer")
        from bert4keras.tokenizers import Tokenizer

        pieces, words, drop = [], [], []
        for token in vocab:
            special, single = Tokenizer._is_special(token), len(token) == 1
            cjk, punct = single and Tokenizer._is_cjk_character(token), single and Tokenizer._is_punctuation(token)
            suffix = token[:2] == "##"
            drop.append(special)
            words.append(not (special or suffix or cjk or punct))  # a space before, unless after CJK
            pieces.append("" if special else token[2:] if suffix else token + " " if punct else token)
        self.drop, self.words = np.array(drop), np.array(words)
        self.pieces = np.array(pieces, dtype=object)
        self.nonempty = np.array([bool(p) for p in pieces])
        self.ends_cjk = np.array([bool(p) and Tokenizer._is_cjk_character(p[-1]) for p in pieces])
        self.closing = _char_class(sorted({ord(c) for c in Tokenizer._cjk_punctuation() + "+-/={(<["}))
        self.digit, self.strip = char_classes()["digit"], char_classes()["strip"]

    def __call__(self, ids: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
        """Text of each row of ``ids`` int32 [batch, length] (string [batch]); ``mask`` [batch, length]: the ids to decode."""
        ids = tf.convert_to_tensor(ids, tf.int32)
        pieces, words = tf.constant(self.pieces, tf.string), tf.constant(self.words)
        ends_cjk, nonempty = tf.constant(self.ends_cjk), tf.constant(self.nonempty)
        keep = ~tf.gather(tf.constant(self.drop), ids)
        if mask is not None:
            keep &= tf.cast(mask, tf.bool)
        rows = tf.shape(ids)[0]

        def step(t, text, last_cjk):  # one token per row, as bert4keras's loop
            token, kept = ids[:, t], keep[:, t]
            piece = tf.gather(pieces, token)
            # a word right after a CJK character takes no space
            piece = tf.where(tf.gather(words, token) & ~last_cjk, tf.strings.join([" ", piece]), piece)
            text = tf.where(kept, tf.strings.join([text, piece]), text)
            last_cjk = tf.where(kept & tf.gather(nonempty, token), tf.gather(ends_cjk, token), last_cjk)
            return t + 1, text, last_cjk

        _, text, _ = tf.while_loop(
            lambda t, *_: t < tf.shape(ids)[1],
            step,
            (tf.constant(0), tf.fill([rows], ""), tf.zeros([rows], tf.bool)),
        )
        text = tf.strings.regex_replace(text, " +", " ")
        text = tf.strings.regex_replace(text, "' (re|m|s|t|ve|d|ll) ", "'\\1 ")
        text = tf.strings.regex_replace(text, f"({self.closing}) ", "\\1")
        text = tf.strings.regex_replace(text, f"({self.digit}\\.) ({self.digit})", "\\1\\2")
        return tf.strings.regex_replace(text, f"^{self.strip}+|{self.strip}+$", "")
