"""3D segmentation as a task kind (`kind: segmentation`)."""

from core.kinds.segmentation.kind import SegmentationKind

__all__ = ["SegmentationKind"]
