"""Image classification (multi-class and multi-label, MedMNIST format) as a task kind."""

from core.kinds.classification.kind import ClassificationKind

__all__ = ["ClassificationKind"]
