"""Transitional alias of :mod:`roformer_sim_ft.readers` and :mod:`roformer_sim_ft.batches`."""
from .readers import *  # noqa: F401,F403
from .readers import ENTAILMENT, SEPS, STRIPS  # noqa: F401
from .batches import *  # noqa: F401,F403
from .batches import _Batches, _RoundRobin, _get_jieba  # noqa: F401
