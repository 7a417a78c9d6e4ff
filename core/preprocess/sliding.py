"""Sliding-window inference over a whole (preprocessed) volume with MONAI, with progress and cancel."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows `sliding_window_inference` runs on an image of `shape`: MONAI's own window grid
    (`dense_patch_slices` over the image padded to the roi, with the scan interval MONAI derives from `overlap`)."""
    padded = [max(int(n), int(r)) for n, r in zip(shape, roi, strict=True)]
    interval = [r if n == r else max(int(r * (1 - overlap)), 1) for n, r in zip(padded, roi, strict=True)]
    return len(dense_patch_slices(padded, [int(r) for r in roi], interval))


def sliding_logits(
    net: torch.nn.Module,
    image: torch.Tensor,
    roi: Sequence[int],
    overlap: float = 0.25,
    mode: str = "gaussian",
    sw_batch_size: int = 1,
    progress: Callable[[float], None] | None = None,
    check: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Logits (C, X, Y, Z) on the CPU for an image (channels, X, Y, Z), by MONAI sliding-window inference on
    the net's device. `progress(fraction)` after every window batch; `check()` before each (it may raise to
    cancel)."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    roi = [int(r) for r in roi]
    total = count_windows(image.shape[1:], roi, overlap)
    done = 0

    def predictor(x: torch.Tensor) -> torch.Tensor:
        nonlocal done
        if check is not None:
            check()
        out = net(x)
        done += x.shape[0]
        if progress is not None:
            progress(min(1.0, done / total))
        return out

    net.eval()
    with torch.no_grad():
        out = sliding_window_inference(
            image[None].float(), roi, sw_batch_size, predictor, overlap=overlap, mode=mode,
            sw_device=device, device=torch.device("cpu"),
        )
    return out[0].float()


