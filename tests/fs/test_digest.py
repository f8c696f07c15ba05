"""Content digests: hash_file (the overlap check's digest) and fingerprint_files (data and checkpoint fingerprints)."""
import hashlib
import re
import shutil

import pytest

from roformer_sim_ft import evaluation
from roformer_sim_ft.errors import RoformerSimError
from roformer_sim_ft.fs.digest import fingerprint_files, hash_file


def test_hash_file_is_the_sha256_of_the_bytes_and_extends_a_given_digest(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # more than one 1 MiB chunk
    path.write_bytes(data)
    assert hash_file(path).hexdigest() == hashlib.sha256(data).hexdigest()
    started = hashlib.sha256(b"head")
    assert hash_file(path, started) is started
    assert started.hexdigest() == hashlib.sha256(b"head" + data).hexdigest()


def test_evaluation_keeps_the_name():
    assert evaluation.fingerprint_files is fingerprint_files


def test_fingerprint_files(tmp_path):
    """A fingerprint names a set of files by names and bytes: the same files give the same
    fingerprint wherever they lie and in any order; one changed byte or name changes it."""
    a = tmp_path / "a"
    a.mkdir()
    (a / "x.txt").write_bytes(b"one")
    (a / "y.txt").write_bytes(b"two")
    fp = fingerprint_files([a / "x.txt", a / "y.txt"])
    assert re.fullmatch(r"[0-9a-f]{16}", fp), fp
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    assert fingerprint_files([copy / "y.txt", copy / "x.txt"]) == fp
    assert fingerprint_files([a]) == fingerprint_files([copy]) == fp
    (copy / "y.txt").write_bytes(b"twp")  # one byte
    assert fingerprint_files([copy]) != fp
    (copy / "y.txt").write_bytes(b"two")
    assert fingerprint_files([copy]) == fp
    (copy / "x.txt").write_bytes(b"on")  # the same bytes in total, split differently
    (copy / "y.txt").write_bytes(b"etwo")
    assert fingerprint_files([copy]) != fp
    (copy / "x.txt").write_bytes(b"one")
    (copy / "y.txt").write_bytes(b"two")
    (copy / "y.txt").rename(copy / "z.txt")  # same bytes, another name
    assert fingerprint_files([copy]) != fp
    with pytest.raises(RoformerSimError, match="no such file"):
        fingerprint_files([tmp_path / "missing"])
