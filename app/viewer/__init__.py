"""The image viewer: a Qt-free model and the Qt views that render it.

    model.py          ViewerModel: display geometry, cursor, slices, readout, window/level, overlay (no Qt)
    slice_view.py     SliceView: one plane drawn with pyqtgraph, its slider and letters
    series_dialog.py  SeriesDialog: pick one DICOM series of a folder
    widget.py         ViewerWidget: the Viewer tab (layout, controls, loading)

`from app.viewer import ViewerWidget` works as it always did, but the Qt modules are imported on first use of
their names (PEP 562 `__getattr__`): `import app.viewer.model` runs this file first and must not load Qt.
"""

from __future__ import annotations

import importlib

from app.viewer.model import (
    CUSTOM,
    PLANES,
    PRESETS,
    DisplayAxes,
    Overlay,
    Plane,
    ViewerModel,
    direction_letters,
    plane_image,
)

__all__ = [
    "CUSTOM",
    "PLANES",
    "PRESETS",
    "DisplayAxes",
    "Overlay",
    "Plane",
    "SeriesDialog",
    "SliceView",
    "ViewerModel",
    "ViewerWidget",
    "direction_letters",
    "plane_image",
]

_QT_NAMES = {
    "SeriesDialog": "app.viewer.series_dialog",
    "SliceView": "app.viewer.slice_view",
    "ViewerWidget": "app.viewer.widget",
}


def __getattr__(name: str):
    """The Qt views, imported when first asked for."""
    module = _QT_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_QT_NAMES))
