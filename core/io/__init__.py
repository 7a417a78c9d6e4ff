"""The one volume reader/writer contract: an array never travels without its geometry.

`read_volume(path)` reads NIfTI, NRRD, MetaImage, DICOM (a file or a folder of series), PNG/JPEG/BMP/TIFF and
.npy into a `Volume` (array + spacing, origin, direction, metadata, warnings); `write_volume` / `write_label_map`
write back with exactly that geometry, atomically. The app, `lorkd apply`, training and the scripts of every
exported bundle read through these functions, so all of them see the same voxels (same DICOM series, same slice
order); `display_plane` is the 2D plane of a volume in radiological display order, what the viewer shows first
and what a classification expert scores.

Problems the user can fix (missing, damaged or unsupported files) raise `core.errors.DataError` with one line that
names the file. Recoverable oddities (non-uniform slice spacing, gantry tilt, several series in a folder, 4D
inputs) become strings in `Volume.warnings`.

Modules, one concern each: `volume` (the type and its geometry), `orientation` (the nearest-axes rule: codes,
display order), `sniff` (extension and content checks), `nifti` (NIfTI header facts), `itk` (NIfTI, NRRD and
MetaImage through SimpleITK), `dicom` (scan, series plan, read), `images` (PNG/JPEG/BMP/TIFF, .npy), `read`
(`read_volume`), `write` (volumes and label maps), `dicom_seg` (DICOM SEG output).

Bundle-portable: modules here import only the standard library, numpy, SimpleITK (pydicom, nibabel, Pillow
inside the readers that need them) and the project's `errors`/`files` through relative imports.
"""

from .dicom import SeriesInfo, list_series
from .orientation import display_axes, display_plane, nearest_axes, orientation_code, to_display
from .read import READ_EXTENSIONS, read_volume
from .volume import Volume
from .write import LABEL_MAP_EXTENSIONS, write_label_map, write_volume

__all__ = [
    "LABEL_MAP_EXTENSIONS",
    "READ_EXTENSIONS",
    "SeriesInfo",
    "Volume",
    "display_axes",
    "display_plane",
    "list_series",
    "nearest_axes",
    "orientation_code",
    "read_volume",
    "to_display",
    "write_label_map",
    "write_volume",
]
