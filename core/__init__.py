"""LoRKD Studio engine: low-rank knowledge decomposition of a medical foundation model into task experts.

`core` never imports Qt, pyqtgraph or `app` (tests/test_layering.py checks it).
"""

__version__ = "0.1.0"
