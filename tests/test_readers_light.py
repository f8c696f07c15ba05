"""The readers are pure Python: importing them loads no TensorFlow, and their text cutting is bert4keras's."""
from __future__ import annotations

import random
import subprocess
import sys

from roformer_sim_ft.data import readers


def test_importing_the_readers_does_not_import_tensorflow():
    code = ("import sys, roformer_sim_ft.data.readers as r; r.load_supervised_data(r.sample_data_dir()); "
            "print(sorted(m for m in ('tensorflow', 'bert4keras', 'tf_keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_text_segmentate_equals_bert4keras():
    from bert4keras.snippets import text_segmentate as reference

    rng = random.Random(0)
    alphabet = "ab，。！？；;, \n中文字"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        for maxlen in (5, 12, 76.8):
            assert readers.text_segmentate(text, maxlen, readers.SEPS, readers.STRIPS) == \
                reference(text, maxlen, readers.SEPS, readers.STRIPS), (text, maxlen)
