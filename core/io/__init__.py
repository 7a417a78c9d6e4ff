"""The one volume reader/writer contract: an array never travels without its geometry.

`read_volume(path)` reads NIfTI, NRRD, MetaImage, DICOM (a file or a folder of series), PNG/JPEG and .npy into a
`Volume` (array + spacing, origin, direction, metadata, warnings); `write_volume` / `write_label_map` write back
with exactly that geometry, atomically. The app, `lorkd apply`, training and the scripts of every exported bundle
read through these functions, so all of them see the same voxels (same DICOM series, same slice order).

Bundle-portable: modules here import only the standard library, numpy, SimpleITK (pydicom, nibabel, Pillow
inside the readers that need them) and the project's `errors`/`files` through relative imports.
"""

from .volume import (
    LABEL_MAP_EXTENSIONS,
    READ_EXTENSIONS,
    SeriesInfo,
    Volume,
    list_series,
    orientation_code,
    read_volume,
    write_label_map,
    write_volume,
)

__all__ = [
    "LABEL_MAP_EXTENSIONS",
    "READ_EXTENSIONS",
    "SeriesInfo",
    "Volume",
    "list_series",
    "orientation_code",
    "read_volume",
    "write_label_map",
    "write_volume",
]
