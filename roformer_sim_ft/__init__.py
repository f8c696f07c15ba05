"""roformer-sim-ft: the RoFormer-Sim-FT recipe on bert4keras and today's TensorFlow.

Importing the package first selects tf_keras for bert4keras (see ``compat``).
"""
from . import compat  # noqa: F401  (must run before tensorflow is imported)
from .errors import RoformerSimError
from .model import SimModel

__version__ = "0.1.0"
__all__ = ["SimModel", "RoformerSimError", "__version__"]
