"""unit_rows: the one numpy L2 normalisation of sentence vectors."""
import numpy as np

from roformer_sim_ft.vectors import unit_rows


def test_rows_get_length_one_in_their_dtype_and_zero_rows_stay_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], np.float32)
    out = unit_rows(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)
    assert x[0, 0] == 3.0  # the input is left as it was
    np.testing.assert_allclose(unit_rows(np.array([3.0, 4.0])), [0.6, 0.8])  # one vector: its last axis
    assert unit_rows(x.astype(np.float64)).dtype == np.float64
