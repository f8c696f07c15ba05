"""roformer-sim-ft: the RoFormer-Sim-FT recipe on bert4keras and today's TensorFlow.

Importing the package only selects tf_keras (Keras 2) for TensorFlow and
bert4keras, by environment variables set before TensorFlow can load; it does
not import TensorFlow itself, so the data readers stay light. The modules that
build models import :mod:`roformer_sim_ft.compat`, which loads TensorFlow and
applies the bert4keras fixes. ``SimModel`` is imported on first use.
"""
import importlib
import os
import sys

# Remember whether TensorFlow was already loaded with Keras 3, for compat to report.
_TF_LOADED_WITH_KERAS3 = "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1"
os.environ["TF_KERAS"] = "1"
os.environ["TF_USE_LEGACY_KERAS"] = "1"

from .errors import RoformerSimError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["SimModel", "RoformerSimError", "__version__"]


def _lazy_exports(package: str, exports: dict[str, str]):
    """A subpackage's ``__getattr__``: its public names (name → submodule) imported on first use, so that
    importing the package stays cheap and circle-free. A name once imported (or assigned) is a plain attribute."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def __getattr__(name: str):
    if name == "SimModel":
        from .model.sim_model import SimModel

        return SimModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
