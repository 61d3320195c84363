"""Global key-locking plumbing on the model side (docs/method.md §5).

K must read the prompt's encoding with every globally locked concept word replaced by its superclass
word, V the personalised one. The text encoder encodes each 77-token window of a prompt on its own,
so a window's key encoding depends on that window alone: a prompt's conditioning carries, as a model
cond, the windows whose key encoding differs from their personalised one (those holding a locked
word) with their key encodings (`KeyWindows`, see text_encoder.py). A DIFFUSION_MODEL wrapper builds
the key context of whatever context reaches the model, window by window: a window equal to one of
them gets its key encoding, any other window is its own key. So contexts lengthened after encoding
(ConditioningConcat) or repeated to a common length where the host batches prompts of different
lengths keep the lock; an attn2 patch then feeds the key context to every K projection. Plain extra keys in a
conditioning dict never reach the model, hence the model-cond route (docs/host.md, "Text encoder").

What cannot be kept: ConditioningConcat keeps only `conditioning_to`'s model conds, so a locked
concept word in `conditioning_from` reaches K unlocked (README, prompts section).
"""

from __future__ import annotations

from collections.abc import Sequence

import comfy.model_management
import comfy.patcher_extension
import torch

KEY_CONTEXT = "perfusion_key_context"
_WRAPPER_KEY = "perfusion_global_key_lock"


class KeyWindows:
    """Text-encoder windows whose key encoding differs from their personalised encoding.

    Used as a model cond (the host's COND interface: process_cond, can_concat, concat, size): it
    holds no per-sample tensor, so any conds batch together, whatever their lengths.
    """

    def __init__(self, windows: torch.Tensor, keys: torch.Tensor) -> None:
        self.windows = windows  # (P, W, D) personalised encodings of the windows
        self.keys = keys  # (P, W, D) their key encodings

    @classmethod
    def of(cls, encoding: torch.Tensor, key_encoding: torch.Tensor, window: int) -> KeyWindows:
        """From a prompt's (1, N·W, D) personalised and key encodings, W tokens per window."""
        windows = encoding.reshape(-1, window, encoding.shape[-1])
        keys = key_encoding.reshape(windows.shape)
        differs = (windows != keys).flatten(1).any(-1)
        return cls(windows[differs], keys[differs])

    def process_cond(self, batch_size: int, **kwargs) -> KeyWindows:
        return self

    def can_concat(self, other) -> bool:
        return isinstance(other, KeyWindows)

    def concat(self, others: Sequence[KeyWindows]) -> KeyWindows:
        parts = [self, *others]
        return KeyWindows(torch.cat([p.windows for p in parts]), torch.cat([p.keys for p in parts]))

    def size(self) -> list[int]:
        return list(self.windows.shape)

    def key_context(self, context: torch.Tensor) -> torch.Tensor | None:
        """The key context for `context` (B, L, D), or None when every window is its own key."""
        if not len(self.windows):
            return None
        width = self.windows.shape[1]
        batch, length, channels = context.shape
        if length % width or channels != self.windows.shape[2]:
            raise ValueError(
                f"global key-lock: the conditioning reaching the model is {length} tokens of {channels} "
                f"channels, not whole {width}-token windows of the text encoder's {self.windows.shape[2]}: "
                "a node between CLIPTextEncode and the sampler changed it in a way the superclass prompt "
                "cannot follow. Use key_lock 'local' with it"
            )
        windows, keys = (
            comfy.model_management.cast_to_device(t, context.device, context.dtype)
            for t in (self.windows, self.keys)
        )
        chunks = context.reshape(batch, length // width, 1, width, channels)
        matches = (chunks == windows).flatten(3).all(-1)  # (B, N, P)
        found = matches.any(-1)[..., None, None]
        chosen = keys[matches.to(torch.uint8).argmax(-1)]  # (B, N, W, D)
        return torch.where(found, chosen, chunks[:, :, 0]).reshape(context.shape)


def _move_key_context(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
    windows = kwargs.pop(KEY_CONTEXT, None)
    key_context = windows.key_context(context) if windows is not None and context is not None else None
    if key_context is not None:
        transformer_options = {**transformer_options, KEY_CONTEXT: key_context}
    return executor(x, timesteps, context, y, control, transformer_options, **kwargs)


def _swap_key_input(n, context, value, extra_options):
    key_context = extra_options.get(KEY_CONTEXT)
    if key_context is None or context is None or key_context.shape != context.shape:
        return n, context, value
    return n, key_context.to(device=context.device, dtype=context.dtype), context if value is None else value


def install_key_context(model) -> None:
    """Adds the wrapper and attn2 patch to `model` (a clone we own) once."""
    wrappers = model.wrappers.get(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {})
    if _WRAPPER_KEY in wrappers:
        return
    model.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, _WRAPPER_KEY, _move_key_context
    )
    model.set_model_attn2_patch(_swap_key_input)
