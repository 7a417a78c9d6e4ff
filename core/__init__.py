"""LoRKD Studio engine: low-rank knowledge decomposition of a medical foundation model into task experts.

`core` never imports Qt, pyqtgraph or `app` (tests/test_layering.py checks it).
"""

import sys

__version__ = "0.1.0"


def _import_monai_without_transformers() -> None:
    """`import monai` imports all its networks, and its Transchex network (which we never use) imports Hugging Face
    transformers when that is installed (peft, our reference for the expert maths, brings it): 3.7 s of every
    process start (the app, each `lorkd` command, each torchrun rank). MONAI is imported once here with transformers
    hidden, so Transchex is left without it; transformers stays importable afterwards (peft imports it)."""
    if "monai" in sys.modules or "transformers" in sys.modules:
        return
    sys.modules["transformers"] = None  # type: ignore[assignment]  # an import of it fails: MONAI skips it
    try:
        import monai  # noqa: F401
    finally:
        if sys.modules.get("transformers", False) is None:
            del sys.modules["transformers"]


_import_monai_without_transformers()
