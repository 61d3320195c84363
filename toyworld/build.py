"""`make toyworld`: train the toy world's UNet (tiny SD1.5 layout, EPS, the SD1.5 noise schedule).

Steps: encode every caption once with the frozen random CLIP-L that ComfyUI loads from the test
fixture (through ComfyUI's own CLIP code, so training sees exactly what sampling will), then train
the UNet on exact latents (:mod:`toyworld.vae`). Deterministic: step k's batch, noise and timesteps
come from a generator seeded with (seed, k), so a run resumed from its last state ends bit-identical
to one that never stopped (same machine, same thread count). State is written every
``--save-every`` steps; rerunning the command resumes. The result, the EMA weights in fp16, goes to
``toyworld/weights/toyworld-unet.safetensors`` (committed, so a fresh clone never trains).

    python -m toyworld.build [--steps N] [--work DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "toyworld" / "weights" / "toyworld-unet.safetensors"
UNET_PREFIX = "model.diffusion_model."


def _import_comfy():
    sys.path.insert(0, str(REPO))
    from harness.paths import comfyui_path

    root = str(comfyui_path())
    if root not in sys.path:
        sys.path.insert(0, root)
    from comfy.cli_args import args

    args.cpu = True


def encode_captions(captions: list[str], work: Path):
    """``[N, 77, 768]`` fp32 encodings of the captions by the fixture's CLIP, cached in ``work``."""
    import torch

    cache = work / "captions.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["captions"] == captions:
            return saved["cond"]
    import comfy.sd

    from harness.fixture_checkpoint import fixture_checkpoint

    ckpt = fixture_checkpoint("tiny")
    _, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clip=True)
    from tqdm import tqdm

    conds = []
    for text in tqdm(captions, desc="encoding captions", unit="caption", mininterval=10):
        with torch.no_grad():
            conds.append(clip.encode_from_tokens(clip.tokenize(text)).float().cpu())
    cond = torch.cat(conds)
    tmp = cache.with_suffix(".tmp")
    torch.save({"captions": captions, "cond": cond}, tmp)
    os.replace(tmp, cache)
    return cond


def new_unet(seed: int):
    """The fixture's ``tiny`` UNet layout with PyTorch's default initialisation, output layers zeroed."""
    import comfy.ops
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from harness.fixture_checkpoint import FixtureSpec

    torch.manual_seed(seed)
    unet = UNetModel(**FixtureSpec("tiny").unet_config(), operations=comfy.ops.disable_weight_init)
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.Linear.reset_parameters(m)
        elif isinstance(m, torch.nn.Conv2d):
            torch.nn.Conv2d.reset_parameters(m)
        elif isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
        if name.endswith(("out.2", "out_layers.3", "proj_out")):
            for p in m.parameters():
                torch.nn.init.zeros_(p)
    return unet


def sd15_alphas_cumprod():
    import torch

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toyworld.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TOYWORLD_THREADS", "0")) or None)
    ap.add_argument("--work", type=Path, default=REPO / "tests" / ".cache" / "toyworld-build")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--bench", type=int, default=0, help="time N steps and stop (no state written)")
    ap.add_argument("--export", action="store_true", help="write the saved state's EMA weights now and stop")
    a = ap.parse_args(argv)
    _import_comfy()
    import torch
    from tqdm import tqdm

    from toyworld import vae, world

    if a.threads:
        torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    train, _ = world.world_scenes()
    singles = [i for i, s in enumerate(train) if len(s.things) == 1]
    pairs = [i for i, s in enumerate(train) if len(s.things) == 2]
    cond = encode_captions([s.caption for s in train] + [""], a.work)
    empty = cond[-1:]
    images = torch.stack([torch.from_numpy(world.render(s)) for s in train]).float() / 255
    x0_all = vae.latents(images)
    acp = sd15_alphas_cumprod()

    unet = new_unet(a.seed)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=a.lr, weight_decay=0.01)
    warmup = 100

    def lr_at(step: int) -> float:
        if step < warmup:
            return a.lr * (step + 1) / warmup
        return a.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, a.steps - warmup)))

    state_file = a.work / "state.pt"
    step = 0
    if state_file.is_file() and not a.bench:
        st = torch.load(state_file, weights_only=True)
        if st["args"] == [a.steps, a.batch, a.lr, a.seed]:
            unet.load_state_dict(st["unet"])
            ema = st["ema"]
            opt.load_state_dict(st["opt"])
            step = st["step"]
            print(f"resuming at step {step}/{a.steps}")
        else:
            print("state was for other settings: starting anew")

    def save_state():
        tmp = state_file.with_suffix(".tmp")
        torch.save(
            {
                "args": [a.steps, a.batch, a.lr, a.seed],
                "unet": unet.state_dict(),
                "ema": ema,
                "opt": opt.state_dict(),
                "step": step,
            },
            tmp,
        )
        os.replace(tmp, state_file)

    if a.export:
        write_weights(ema, a.out, step, a)
        return 0
    bar = tqdm(
        total=a.bench or a.steps,
        initial=0 if a.bench else step,
        desc="training UNet",
        unit="step",
        mininterval=20,
    )
    t0 = time.perf_counter()
    losses: list[float] = []
    end = a.bench or a.steps
    while step < end:
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        half = a.batch // 2
        idx = torch.cat(
            [
                torch.tensor(singles)[torch.randint(len(singles), (half,), generator=g)],
                torch.tensor(pairs)[torch.randint(len(pairs), (a.batch - half,), generator=g)],
            ]
        )
        x0 = x0_all[idx]
        c = cond[idx].clone()
        drop = torch.rand(a.batch, generator=g) < 0.1
        c[drop] = empty
        t = torch.randint(0, 1000, (a.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        ab = acp[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        snr = acp[t] / (1 - acp[t])
        weight = snr.clamp(max=5.0) / snr  # Min-SNR-5 for epsilon prediction
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        pred = unet(xt, timesteps=t.float(), context=c)  # fp32: bf16 autocast ran 20x slower here
        loss = ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3)).mul(weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", lr=f"{lr_at(step - 1):.2e}")
        if not a.bench and (step % a.save_every == 0 or step == a.steps):
            save_state()
    bar.close()
    if a.bench:
        print(f"{(time.perf_counter() - t0) / a.bench:.2f} s/step, threads {torch.get_num_threads()}")
        return 0
    write_weights(ema, a.out, step, a)
    return 0


def write_weights(ema: dict, out: Path, step: int, a: argparse.Namespace) -> None:
    """The EMA UNet as fp16 safetensors under ComfyUI's checkpoint key prefix, written atomically."""
    import torch
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {UNET_PREFIX + k: v.to(torch.float16).contiguous() for k, v in sorted(ema.items())}
    meta = {
        "steps": str(step),
        "planned_steps": str(a.steps),
        "seed": str(a.seed),
        "batch": str(a.batch),
        "lr": str(a.lr),
    }
    tmp = out.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) at step {step}")


if __name__ == "__main__":
    raise SystemExit(main())
