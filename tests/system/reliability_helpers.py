"""What the reliability tests share: the one-line-error check and weight comparisons."""
from __future__ import annotations

import numpy as np

from roformer_sim_ft import checkpoints
from roformer_sim_ft.cli import main


def one_line_error(capsys, args) -> str:
    """Run the CLI; assert exit 2 with exactly one line on stderr and no traceback; return that line."""
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    return captured.err


def weights_of(path):
    return checkpoints.load_checkpoint(path)[2]


def same_weights(a, b) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
