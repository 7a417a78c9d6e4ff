"""Loading a checkpoint's weights into a network strictly, with one-line errors that name the first problem."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from core.errors import CheckpointError


def load_strict(
    path: str | os.PathLike, module: nn.Module, state: Mapping[str, torch.Tensor], what: str
) -> None:
    """module.load_state_dict(state, strict=True), with a one-line CheckpointError naming the first
    problem (input channels / dimensionality, missing or unexpected keys, a shape, non-finite values)."""
    own = module.state_dict()
    first_conv = next((k for k, v in own.items() if k.endswith("weight") and v.dim() >= 3), None)
    if first_conv is not None and first_conv in state:
        want, got = own[first_conv].shape, state[first_conv].shape
        if len(want) != len(got):
            raise CheckpointError(
                f"checkpoint {path} holds a {len(got) - 2}D network; the data are {len(want) - 2}D"
            )
        if want[1] != got[1]:
            raise CheckpointError(
                f"checkpoint {path} was trained on {got[1]} input channels; the data have {want[1]} "
                f"(set data.in_channels: {got[1]})"
            )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(f"checkpoint {path} does not fit {what}: {', '.join(parts)}")
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"checkpoint {path} does not fit {what}: {k} has shape {tuple(state[k].shape)}, "
            f"expected {tuple(own[k].shape)} ({len(wrong)} tensors differ)"
        )
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} has non-finite values (NaN or inf) in {bad}")
    module.load_state_dict(state, strict=True)
