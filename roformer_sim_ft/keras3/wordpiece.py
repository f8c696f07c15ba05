"""A BERT WordPiece tokenizer in plain Python, giving the ids bert4keras's ``Tokenizer`` gives.

For runtimes without bert4keras (Keras 3 apps on any backend). It follows
bert4keras 0.11.5 with ``do_lower_case=True``, as the original RoFormer-Sim
scripts use it: lowercase and strip accents (NFD, drop ``Mn``); put spaces
around punctuation and CJK characters; drop control characters; split on
whitespace; greedy longest-match WordPiece (``##`` continuations, a word with
no match becomes [UNK], words over 200 characters are kept whole); wrap in
``[CLS] … [SEP]`` and truncate to ``maxlen`` by dropping tokens before [SEP].
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

from ..errors import RoformerSimError

_WORD_MAXLEN = 200  # bert4keras's default: longer "words" are one (usually [UNK]) token


def _is_punctuation(ch: str) -> bool:
    code = ord(ch)
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 or unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def _is_space(ch: str) -> bool:
    return ch in " \n\r\t" or unicodedata.category(ch) == "Zs"


class WordPieceTokenizer:
    """Text → token ids for a RoFormer-Sim ``vocab.txt`` (ids are line numbers).

    Args:
        vocab: the tokens, one per id.

    Example:
        >>> tokenizer = WordPieceTokenizer(vocab)
        >>> ids = tokenizer.encode("今天天气不错", maxlen=64)  # [CLS] 今 天 天 气 不 错 [SEP]
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        self.token_ids = {token: i for i, token in enumerate(vocab)}  # a repeated token: its last line, as bert4keras
        for token in ("[UNK]", "[CLS]", "[SEP]"):
            if token not in self.token_ids:
                raise RoformerSimError(f"vocab has no {token} token")
        self.unk, self.cls, self.sep = (self.token_ids[t] for t in ("[UNK]", "[CLS]", "[SEP]"))

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` (without [CLS]/[SEP])."""
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        spaced = []
        for ch in text:
            if _is_punctuation(ch) or _is_cjk(ch):
                spaced.append(f" {ch} ")
            elif _is_space(ch):
                spaced.append(" ")
            elif ord(ch) in (0, 0xFFFD) or unicodedata.category(ch) in ("Cc", "Cf"):
                continue
            else:
                spaced.append(ch)
        tokens = []
        for word in "".join(spaced).split():
            tokens.extend(self._word_pieces(word))
        return tokens

    def _word_pieces(self, word: str) -> list[str]:
        if len(word) > _WORD_MAXLEN:
            return [word]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.token_ids:
                    break
                end -= 1
            if end == start:
                return [word]
            pieces.append(piece)
            start = end
        return pieces

    def encode(self, text: str, maxlen: int | None = None) -> list[int]:
        """``[CLS] tokens [SEP]`` ids, at most ``maxlen`` of them (the tail before [SEP] is dropped)."""
        ids = [self.cls] + [self.token_ids.get(t, self.unk) for t in self.tokenize(text)] + [self.sep]
        if maxlen is not None and len(ids) > maxlen:
            ids = ids[: max(maxlen - 1, 1)] + [self.sep]
        return ids
