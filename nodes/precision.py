"""The dtype training computes in, and the loss scaling that fp16 needs (host glue).

Trained parameters and optimizer state always stay float32; only the frozen model's forward and
backward run in the chosen dtype. The noise-prediction loss is a mean over every latent element,
so at 512 px each element's gradient is ~1e-7..1e-6: below fp16's normal range. fp16 therefore
trains with dynamic loss scaling (`torch.amp.GradScaler`), which skips steps whose gradients
overflow and lowers the scale; bf16 has fp32's range and needs none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger("comfyui-perfusion")


def model_compute_dtype(model) -> torch.dtype:
    """The dtype ComfyUI runs this model's layers in (its manual-cast dtype, else the weights').

    Read through the patcher: the ModelComputeDtype node sets it as an object patch, which reaches
    `model.model` only while the model is loaded."""
    return model.get_model_object("manual_cast_dtype") or model.model.get_dtype()


def resolve(choice: str, model, device: torch.device) -> tuple[torch.dtype, str]:
    """(compute dtype, why) for the `precision` input. `auto` computes in the dtype ComfyUI samples
    this model in on this device (fp16 on most GPUs, fp32 on a CPU), so training sees the numbers
    generation will; weight formats that are only storage (fp8) count as their compute dtype."""
    if choice not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{choice}'")
    if choice == "auto":
        dtype = model_compute_dtype(model)
        if dtype not in _DTYPES.values():
            dtype = torch.float32
        why = f"auto: the model computes in {_name(dtype)} on {device.type}"
    else:
        dtype, why = _DTYPES[choice], f"{choice} as set"
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"precision: bf16 is not supported by {torch.cuda.get_device_name(device)}; choose fp16"
        )
    return dtype, why


def _name(dtype: torch.dtype) -> str:
    return next(name for name, d in _DTYPES.items() if d == dtype)


@dataclass
class Precision:
    """Compute dtype of one training run and its loss scaler."""

    dtype: torch.dtype
    device: torch.device

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.skipped_steps = 0

    @property
    def name(self) -> str:
        return _name(self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, step: int) -> bool:
        """Unscales the gradients and steps; False when fp16 gradients overflowed (step skipped)."""
        if not self.scaler.is_enabled():
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        if self.scaler.get_scale() >= scale:
            return True
        self.skipped_steps += 1
        log.warning(
            "Perfusion: step %d skipped: fp16 gradients overflowed (inf/nan) at loss scale %g; scale now %g",
            step,
            scale,
            self.scaler.get_scale(),
        )
        return False

    def gradient_scale(self) -> float:
        """What the current gradients are multiplied by (GradScaler says 1.0 when it is disabled)."""
        return self.scaler.get_scale()
