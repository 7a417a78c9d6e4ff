"""The expert layer: a convolution (or linear layer) with one low-rank expert per task.

Task t's weight is `W_t = W0 + s_t * dW_t` with `s_t = alpha / r_t`. Two parameterisations
(DESIGN.md), both exactly mergeable into a plain layer:

- ``factorized``: A_t is a conv with the base's kernel, stride, padding and dilation mapping C_in to
  r_t channels, B_t a 1x1 conv r_t -> C_out; `dW_t = B_t @ A_t`. Inside a route the layer computes
  `conv(x, W0) + s_t * B_t(A_t(x_t))` on each task's samples: no dense dW per step.
- ``paper``: the CVPR paper's shapes, `A_t: (r*k, C_in*k^(d-1))`, `B_t: (C_out*k, r*k)` and
  `dW_t = reshape(B_t @ A_t)`; inside a route each task's samples are convolved with the dense
  `W0 + s_t * dW_t`.

Both start with A Kaiming-uniform and B zero, so every expert starts equal to the backbone.
Outside a route the layer is the plain backbone layer. `impl="reference"` routes through the
paper's per-sample grouped convolution (B weight copies; slow, used by tests as the ground truth).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from core.experts.plan import RoutePlan

FORMS = ("factorized", "paper")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def is_eligible(module: nn.Module, linear: bool = False) -> bool:
    """Convolutions with groups == 1 (and, optionally, Linear layers) receive experts."""
    if isinstance(module, _CONV + _CONVT):
        return module.groups == 1
    return linear and isinstance(module, nn.Linear)


class ExpertConv(nn.Module):
    """Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear with per-task low-rank experts.

    Holds the base layer's `weight` and `bias` under the same names (a backbone state_dict keeps its
    keys) plus `lora_A.<t>` / `lora_B.<t>` for every task t.
    """

    def __init__(self, base: nn.Module, ranks: list[int], alpha: float = 16.0, form: str = "factorized") -> None:
        super().__init__()
        if not is_eligible(base, linear=True):
            raise TypeError(f"cannot attach experts to {type(base).__name__} (groups must be 1)")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if not ranks or min(ranks) < 1:
            raise ValueError(f"every task needs a rank >= 1, got {ranks}")
        self.base_type = type(base)
        if isinstance(base, nn.Linear):
            self.kind, self.spatial_dims = "linear", 0
            self.options: dict = {}
            self.init_args = {"in_features": base.in_features, "out_features": base.out_features}
        else:
            self.kind = "convT" if isinstance(base, _CONVT) else "conv"
            self.spatial_dims = len(base.kernel_size)
            self.options = {"stride": base.stride, "dilation": base.dilation}
            if base.padding_mode != "zeros":
                if self.kind == "convT":
                    raise TypeError("ConvTranspose only supports zero padding")
                self.pad = (base._reversed_padding_repeated_twice, base.padding_mode)
                self.options["padding"] = 0
            else:
                self.options["padding"] = base.padding
            if self.kind == "convT":
                self.options["output_padding"] = base.output_padding
            self.init_args = {
                "in_channels": base.in_channels,
                "out_channels": base.out_channels,
                "kernel_size": base.kernel_size,
                "stride": base.stride,
                "padding": base.padding,
                "dilation": base.dilation,
                "bias": base.bias is not None,
                "padding_mode": base.padding_mode,
            }
            if self.kind == "convT":
                self.init_args["output_padding"] = base.output_padding
        if not hasattr(self, "pad"):
            self.pad = None
        self.weight = base.weight
        self.bias = base.bias
        self.form = form
        self.alpha = float(alpha)
        self.ranks = list(ranks)
        self.scales = [self.alpha / r for r in self.ranks]
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        for r in self.ranks:
            a_shape, b_shape = self._factor_shapes(r)
            self.lora_A.append(nn.Parameter(self._init_a(a_shape, r)))
            self.lora_B.append(nn.Parameter(torch.zeros(b_shape, dtype=self.weight.dtype, device=self.weight.device)))
        self.merged_task: int | None = None
        self.plan: RoutePlan | None = None
        self.impl = "fast"
        # "auto" | "branch" | "dense" | "grouped" (see _choose); the paper form has no branch
        self.strategy = "auto"

    # ----------------------------------------------------------------------------------- shapes
    @property
    def num_tasks(self) -> int:
        return len(self.ranks)

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[2:])

    def _factor_shapes(self, r: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        w = self.weight.shape
        if self.form == "paper":
            k = w[2] if self.spatial_dims else 1
            rest = math.prod(w[3:]) if self.spatial_dims > 1 else 1
            # W is (s0, s1, k1, k2, ...): B (s0*k1, r*k1) @ A (r*k1, s1*k2*...) has W's element count.
            return (r * k, w[1] * rest), (w[0] * k, r * k)
        if self.kind == "convT":  # weight (C_in, C_out, *k): A is a transposed conv C_in -> r
            return (w[0], r, *w[2:]), (w[1], r)
        return (r, *w[1:]), (w[0], r)

    def _init_a(self, shape: tuple[int, ...], r: int) -> torch.Tensor:
        """Kaiming-uniform (a=sqrt(5), as LoRA) with the fan-in of the down-projection."""
        kw = {"dtype": self.weight.dtype, "device": self.weight.device}
        if self.kind == "convT" and self.form == "factorized":  # stored (C_in, r, *k)
            a = torch.empty(r, shape[0], *shape[2:], **kw)
            nn.init.kaiming_uniform_(a.view(r, -1), a=math.sqrt(5))
            return a.transpose(0, 1).contiguous()
        a = torch.empty(shape, **kw)
        nn.init.kaiming_uniform_(a.view(shape[0], -1), a=math.sqrt(5))
        return a

    # ------------------------------------------------------------------------------------ deltas
    def delta_weight(self, task: int) -> torch.Tensor:
        """Dense `s_t * dW_t` in the layout of `weight`."""
        a, b = self.lora_A[task], self.lora_B[task]
        if self.form == "paper":
            delta = (b @ a).view(self.weight.shape)
        elif self.kind == "convT":
            delta = torch.einsum("ir...,or->io...", a, b)
        else:
            delta = (b @ a.flatten(1)).view(self.weight.shape)
        return delta * self.scales[task]

    def _task_weights(self, tasks: list[int]) -> list[torch.Tensor]:
        """`W0 + s_t dW_t` for each of `tasks`, in the memory layout of `weight`.

        Equal ranks (factorized conv or linear): one `baddbmm` over the stacked factors instead of a
        matmul, a scale and an add per task (and their backward nodes). A channels-last weight is built
        in its own order (C_out, *k, C_in), so neither the weights nor their gradients are re-laid out.
        """
        if self.form != "factorized" or self.kind == "convT" or len(set(self.ranks)) > 1:
            return [self.weight + self.delta_weight(t) for t in tasks]
        w = self.weight
        last = w.dim() > 2 and not w.is_contiguous() and w.movedim(1, -1).is_contiguous()
        a = torch.stack([self.lora_A[t] for t in tasks])  # (T', r, C_in, *k)
        b = torch.stack([self.lora_B[t] for t in tasks])  # (T', C_out, r)
        if last:
            a, base = a.movedim(2, -1), w.movedim(1, -1)  # (T', r, *k, C_in), (C_out, *k, C_in) views
        else:
            base = w
        out = torch.baddbmm(base.reshape(1, w.shape[0], -1), b, a.flatten(2), alpha=self.scales[0])
        out = out.view(len(tasks), *base.shape)
        return list((out.movedim(-1, 2) if last else out).unbind(0))

    # ---------------------------------------------------------------------------------- forward
    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, **override) -> torch.Tensor:
        if self.kind == "linear":
            return F.linear(x, weight, bias)
        options = {**self.options, **override}
        if self.kind == "convT":
            fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.spatial_dims - 1]
            return fn(x, weight, bias, options["stride"], options["padding"], options["output_padding"],
                      options.get("groups", 1), options["dilation"])
        fn = (F.conv1d, F.conv2d, F.conv3d)[self.spatial_dims - 1]
        if self.pad is not None:
            x = F.pad(x, self.pad[0], mode=self.pad[1])
        return fn(x, weight, bias, options["stride"], options["padding"], options["dilation"], options.get("groups", 1))

    def _up(self, z: torch.Tensor, task: int) -> torch.Tensor:
        """B_t of the factorized form: a 1x1 conv r -> C_out (channels-first), scaled."""
        b = self.lora_B[task] * self.scales[task]
        if self.kind == "linear":
            return F.linear(z, b)
        fn = (F.conv1d, F.conv2d, F.conv3d)[self.spatial_dims - 1]
        return fn(z, b.view(*b.shape, *([1] * self.spatial_dims)))

    def _add_up(self, y: torch.Tensor, z: torch.Tensor, plan: RoutePlan) -> torch.Tensor:
        """`y + s_t B_t z` for every sample in one batched matmul (equal ranks).

        Each sample gets its task's B (C_out x r, a small copy per sample); one `baddbmm` replaces T 1x1
        convolutions, their concatenation and the add. Works on channels-first and channels-last tensors.
        """
        ups = torch.stack(list(self.lora_B)) * self.scales[0]  # (T, C_out, r)
        ups = ups.index_select(0, plan.task_ids_on(ups.device))  # (n, C_out, r)
        n, out_channels, r = ups.shape
        if self.kind != "linear" and y.is_contiguous():  # channels-first: (n, C_out, P) += B (n, C_out, r) @ z
            return torch.baddbmm(y.view(n, out_channels, -1), ups, z.reshape(n, r, -1)).view(y.shape)
        y_last, z_last = (y, z) if self.kind == "linear" else (y.movedim(1, -1), z.movedim(1, -1))
        out = torch.baddbmm(y_last.reshape(n, -1, out_channels), z_last.reshape(n, -1, r), ups.transpose(1, 2))
        out = out.view(y_last.shape)
        return out if self.kind == "linear" else out.movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        if plan is None:
            return self._op(x, self.weight, self.bias)
        if self.merged_task is not None:
            raise RuntimeError("an expert is merged into this layer: unmerge it before routing")
        if x.shape[0] != plan.batch_size:
            raise RuntimeError(
                f"routed layer got a batch of {x.shape[0]} samples but the route has {plan.batch_size} task ids"
            )
        if self.impl == "reference":
            return self._reference_forward(x, plan)
        strategy = self._choose(x, plan)
        if strategy == "grouped":
            return self._grouped_forward(x, plan)
        parts = plan.split(x)
        if strategy == "branch":
            y = self._op(x, self.weight, self.bias)
            downs = [self._op(part, self.lora_A[t], None) for t, part in zip(plan.tasks, parts, strict=True)]
            if len(set(self.ranks)) > 1:  # per-task ranks: z cannot be one tensor, one 1x1 conv per task
                return y + plan.join([self._up(z, t) for t, z in zip(plan.tasks, downs, strict=True)])
            return self._add_up(y, plan.join(downs), plan)
        weights = self._task_weights(plan.tasks)
        return plan.join([self._op(part, w, self.bias) for w, part in zip(weights, parts, strict=True)])

    def _choose(self, x: torch.Tensor, plan: RoutePlan) -> str:
        """"branch", "dense" or "grouped" for this input (all exact; `strategy` other than auto forces one).

        - grouped (per-sample weights, one grouped conv): 3D layers on batches of <= 8 samples, where
          task segments of one sample would run PyTorch's native conv3d instead of oneDNN.
        - dense (per-task W0 + dW_t on the task segments): no extra FLOPs but T smaller GEMMs; measured on
          CPU it wins while a segment has >= 256 output rows (samples x output positions).
        - branch (factorized only: conv(x, W0) + s B_t(A_t(x_t))): small feature maps.
        """
        if self.strategy != "auto":
            return "dense" if self.form == "paper" and self.strategy == "branch" else self.strategy
        if self.kind == "linear":
            return "branch" if self.form == "factorized" else "dense"
        if self.spatial_dims == 3 and x.shape[0] <= 8:
            return "grouped"
        if self.form == "paper":
            return "dense"
        stride = math.prod(self.options["stride"])
        positions = math.prod(x.shape[2:]) / stride if self.kind == "conv" else math.prod(x.shape[2:]) * stride
        return "dense" if x.shape[0] / len(plan.tasks) * positions >= 256 else "branch"

    def _reference_forward(self, x: torch.Tensor, plan: RoutePlan) -> torch.Tensor:
        """The paper's EKS conv: per-sample weights W0 + sum_t M[b, t] dW_t, one grouped conv."""
        onehot = F.one_hot(plan.task_ids_on(self.weight.device), self.num_tasks).to(self.weight.dtype)  # (B, T)
        deltas = torch.stack([self.delta_weight(t) for t in range(self.num_tasks)])  # (T, *W)
        weights = self.weight.unsqueeze(0) + torch.einsum("bt,t...->b...", onehot, deltas)  # (B, *W)
        return self._per_sample(x, weights)

    def _grouped_forward(self, x: torch.Tensor, plan: RoutePlan) -> torch.Tensor:
        """Per-sample weights W0 + dW_t(b) gathered from the present tasks' deltas, one grouped conv.

        Chosen for 3D layers on small batches: task segments of one sample fall off oneDNN onto
        PyTorch's native conv3d (~10x slower, e.g. a 64^3 UNet step 3.4x the plain one), while a grouped
        conv stays on oneDNN (1.23x). The weight copies are n x |W| for n <= 8 samples.
        """
        deltas = torch.stack([self.delta_weight(t) for t in plan.tasks])  # (T present, *W)
        position = torch.full((self.num_tasks,), -1, dtype=torch.long)
        position[plan.tasks] = torch.arange(len(plan.tasks))
        index = position.to(deltas.device)[plan.task_ids_on(deltas.device)]
        return self._per_sample(x, self.weight.unsqueeze(0) + deltas.index_select(0, index))

    def _per_sample(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Sample b through weights[b]: one grouped conv with groups = batch size."""
        n = x.shape[0]
        if self.kind == "linear":
            y = torch.einsum("b...i,boi->b...o", x, weights)
            return y + self.bias if self.bias is not None else y
        bias = self.bias.repeat(n) if self.bias is not None else None
        grouped = x.reshape(1, n * x.shape[1], *x.shape[2:])
        y = self._op(grouped, weights.reshape(n * weights.shape[1], *weights.shape[2:]), bias, groups=n)
        return y.reshape(n, -1, *y.shape[2:])

    # ------------------------------------------------------------------------- merge / unmerge
    @torch.no_grad()
    def merge(self, task: int) -> None:
        """Fold expert `task` into `weight` (safe: refuses non-finite results)."""
        if self.merged_task is not None:
            raise RuntimeError(f"expert {self.merged_task} is already merged; unmerge it first")
        merged = self.weight + self.delta_weight(task)
        if not torch.isfinite(merged).all():
            raise ValueError(f"merging expert {task} gives non-finite weights; refusing to merge")
        self.weight.copy_(merged)
        self.merged_task = task

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the merged expert again, giving back the backbone weight `W0`."""
        if self.merged_task is None:
            raise RuntimeError("no expert is merged")
        self.weight.sub_(self.delta_weight(self.merged_task))
        self.merged_task = None

    def to_plain(self, task: int | None) -> nn.Module:
        """A new plain layer with `W0 + s_t dW_t` (or `W0` when task is None)."""
        if self.merged_task is not None:
            raise RuntimeError("unmerge before exporting a plain layer")
        plain = self.base_type(**self.init_args).to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            weight = self.weight if task is None else self.weight + self.delta_weight(task)
            if not torch.isfinite(weight).all():
                raise ValueError(f"expert {task} has non-finite weights; refusing to merge")
            plain.weight.copy_(weight)
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain

    def extra_repr(self) -> str:
        shape = tuple(self.weight.shape)
        return f"{self.base_type.__name__}{shape}, form={self.form}, ranks={self.ranks}, alpha={self.alpha}"
