"""Gradient checkpointing of the UNet: which layers run under torch.utils.checkpoint in a real
training step, that backward recomputes them, and that the gradients do not change.

The expected layers come from the host's own classes (every ResBlock, Downsample, Upsample and
transformer block), not from the pack's list, and "ran under checkpoint" is seen from outside: module
hooks name the layer the host calls, a spy on torch.utils.checkpoint.checkpoint (which still runs it)
records the calls.
"""

import collections
import contextlib
import sys

import pytest
import torch

from harness import training_runs
from harness.fixture_checkpoint import fixture_checkpoint

TEMPLATES = ("a photo of a {}", "a good photo of the {}")


@pytest.fixture(scope="module")
def base_models(comfy_host, tiny_ckpt_name):
    """(MODEL, CLIP, VAE) loaded by CheckpointLoaderSimple under inference mode, as the executor does."""
    with torch.inference_mode():
        return sys.modules["nodes"].CheckpointLoaderSimple().load_checkpoint(tiny_ckpt_name)[:3]


def host_layers(unet) -> tuple[list[str], list[str]]:
    """Names of the layers checkpointing must cover, by the host's classes (each ResBlock, Downsample,
    Upsample, SpatialTransformer of one transformer block, and each block of deeper ones), and of all
    transformer blocks."""
    from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample

    modules = dict(unet.named_modules())
    blocks = [name for name, module in modules.items() if isinstance(module, BasicTransformerBlock)]
    layers = [
        name for name, module in modules.items() if isinstance(module, (ResBlock, Downsample, Upsample))
    ]
    for name, module in modules.items():
        if isinstance(module, SpatialTransformer):
            depth = len(module.transformer_blocks)
            layers += [name] if depth == 1 else [f"{name}.transformer_blocks.{i}" for i in range(depth)]
    return layers, blocks


@contextlib.contextmanager
def recording(unet, monkeypatch):
    """Yields (layers the UNet ran under checkpoint, calls per UNet module name)."""
    names = {module: name for name, module in unet.named_modules()}
    entered: list[str | None] = [None]  # the UNet module whose __call__ began last
    checkpointed: list[str] = []
    calls: collections.Counter = collections.Counter()

    def pre_hook(module, args):
        entered[0] = names[module]
        calls[names[module]] += 1

    def spy(function, *args, **kwargs):
        if entered[0] is not None:  # called as that module's forward
            checkpointed.append(entered[0])
        entered[0] = None
        return real(function, *args, **kwargs)

    real = torch.utils.checkpoint.checkpoint
    handles = [module.register_forward_pre_hook(pre_hook) for module in names]
    handles.append(unet.register_forward_hook(lambda *_: entered.__setitem__(0, None)))
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", spy)
    try:
        yield checkpointed, calls
    finally:
        for handle in handles:
            handle.remove()


def open_run(pack, models, pixels, checkpointing: bool, batch_size: int = 1):
    from perfusion_core.training import TrainingConfig

    config = TrainingConfig(
        templates=TEMPLATES, batch_size=batch_size, grad_accumulation=1, resolution=64, seed=0, steps=1
    )
    return training_runs.open_run(pack, models, pixels, config, gradient_checkpointing=checkpointing)


def assert_checkpointed(unet, checkpointed: list[str], calls) -> None:
    """Each host layer ran under checkpoint once in forward; each transformer block's cross-attention
    ran again in backward (its activations were recomputed, not kept)."""
    expected, transformer_blocks = host_layers(unet)
    print(f"{len(checkpointed)} UNet layers ran under checkpoint; {len(expected)} expected")
    assert len(checkpointed) > 0
    assert sorted(checkpointed) == sorted(expected)
    runs = {name: calls[f"{name}.attn2"] for name in transformer_blocks}
    assert runs and set(runs.values()) == {2}, runs


def test_a_training_step_runs_every_unet_layer_under_checkpoint(
    perfusion_pack, base_models, toy_pixels, monkeypatch
):
    unet = base_models[0].model.diffusion_model
    with torch.inference_mode(False), torch.enable_grad():
        with open_run(perfusion_pack, base_models, toy_pixels, True) as run:
            with recording(unet, monkeypatch) as (checkpointed, calls):
                run.train(None)
    assert_checkpointed(unet, checkpointed, calls)


def test_checkpointing_leaves_the_gradients_unchanged(perfusion_pack, base_models, toy_pixels):
    from perfusion_core.training import plan_batch

    grads = []
    for checkpointing in (False, True):
        with torch.inference_mode(False), torch.enable_grad():
            with open_run(perfusion_pack, base_models, toy_pixels, checkpointing, batch_size=2) as run:
                batch = plan_batch(torch.Generator().manual_seed(3), run.n_images, TEMPLATES, 2, 0.5)
                grads.append(run.gradients(batch, run.noise(2, torch.Generator().manual_seed(4))))
    plain, recomputed = grads
    assert plain.keys() == recomputed.keys()
    for name, grad in plain.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-4, atol=1e-6 * float(grad.abs().max()))


@pytest.fixture(scope="module")
def sdxl_unet(comfy_host):
    """The SDXL-layout fixture's denoiser alone (depth-10 transformers, linear proj_in; its two text
    encoders, ~4 GB, are not loaded)."""
    import comfy.sd

    model = comfy.sd.load_checkpoint_guess_config(
        str(fixture_checkpoint("sdxl")), output_vae=False, output_clip=False
    )[0]
    yield model
    comfy_host.unload_all()


def context_gradient(model, seed: int = 0) -> torch.Tensor:
    """d(output²)/d(context) of one SDXL denoiser call at 128 px, with `model`'s patches in force."""
    import comfy.model_management

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, 2048, generator=generator).requires_grad_(True)
    y = torch.randn(1, 2816, generator=generator)
    comfy.model_management.load_models_gpu([model])
    device = comfy.model_management.get_torch_device()
    with torch.inference_mode(False), torch.enable_grad():
        out = model.model.apply_model(
            x.to(device), torch.tensor([1.0], device=device), c_crossattn=context, y=y
        )
        (grad,) = torch.autograd.grad(out.float().square().sum(), context)
    return grad


def test_sdxl_blocks_are_checkpointed_one_transformer_block_at_a_time(
    comfy_host, perfusion_pack, sdxl_unet, monkeypatch
):
    unet = sdxl_unet.model.diffusion_model
    plain = context_gradient(sdxl_unet)
    patched = sdxl_unet.clone()
    perfusion_pack.nodes.checkpointing.checkpoint_unet(patched)
    try:
        with recording(unet, monkeypatch) as (checkpointed, calls):
            recomputed = context_gradient(patched)
    finally:
        comfy_host.unload_all()  # the patches come off the shared layers
    assert_checkpointed(unet, checkpointed, calls)
    torch.testing.assert_close(recomputed, plain, rtol=1e-4, atol=1e-6 * float(plain.abs().max()))
