"""Global key-locking plumbing on the model side (spec §5).

The superclass prompt's encoding rides in the conditioning as a model cond (see
text_encoder.py), a DIFFUSION_MODEL wrapper moves it into transformer_options, and an attn2
patch feeds it to every K projection while V keeps the personalised encoding. Plain extra keys
in a conditioning dict never reach the model, hence the model-cond route (comfyui-notes.md).
"""

from __future__ import annotations

import comfy.patcher_extension

KEY_CONTEXT = "perfusion_key_context"
_WRAPPER_KEY = "perfusion_global_key_lock"


def _move_key_context(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
    key_context = kwargs.pop(KEY_CONTEXT, None)
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
