"""`make toyworld`: train the toy world's UNet (tiny SD1.5 layout, EPS, the SD1.5 noise schedule)
together with the attention of CLIP's last layer.

Steps: run every caption once through the first 11 layers of the frozen random CLIP-L that ComfyUI
loads from the test fixture (through ComfyUI's own CLIP code, so training sees exactly what sampling
will), then train the UNet on exact latents (:mod:`toyworld.vae`) and the last layer's attention on
those hidden states (:class:`TextHead`). Deterministic: step k's batch, noise and timesteps
come from a generator seeded with (seed, k), so a run resumed from its last state ends bit-identical
to one that never stopped (same machine, same thread count). State is written every
``--save-every`` steps; rerunning the command resumes. The result, the EMA weights in 8 bits (:mod:`toyworld.storage`), goes
to ``toyworld/weights/toyworld.safetensors`` (committed, so a fresh clone never trains). The
schedule is three cosine cycles (``--steps``, then each of ``--restart``): the first learns what each
noun draws and, once its rate is low, where; the later ones, at lower peaks, bind each look to its
place (held-out pairs both right: 0.98 after the third, on 211 pairs).
``--eval-every`` samples held-out two-object captions in-process while it trains.

``--value-swap`` (an experiment) gives the cross-attention values each training caption's things at
other places (:func:`value_donors`), so the UNet has to find where an object is through its keys, as
SD does, instead of its value (``python -m toyworld.place_route``). Built so from scratch, the world
learnt to ignore place instead (README, Quality: "A world that places objects through its keys");
``--init`` starts from packed weights instead of from scratch, to try a setting on the shipped world.

    python -m toyworld.build [--steps N] [--work DIR] [--value-swap] [--init WEIGHTS]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import sys
import time
from pathlib import Path

from toyworld.checkpoint import LAST, LAST_LAYER, TEXT_ROOT, TEXT_SILENCED

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "toyworld" / "weights" / "toyworld.safetensors"
UNET_PREFIX = "model.diffusion_model."
TRAINED = ("self_attn.", "layer_norm1.")  # what of it the world trains
CLIP_NAME = "text."  # prefix of the trained text parameters in the training state


def _import_comfy():
    from harness.paths import comfyui_path

    root = str(comfyui_path())
    if root not in sys.path:  # the host's folder: `comfy` is not an installed package
        sys.path.insert(0, root)
    from comfy.cli_args import args

    args.cpu = True


def encode_hidden(captions: list[str], work: Path) -> tuple:
    """(``[N, 77, 768]`` fp16 input of CLIP's last layer for each caption, the frozen text encoder),
    computed by ComfyUI's own CLIP code on the fixture's frozen random CLIP-L (so training sees
    exactly what sampling will) and cached in ``work``."""
    import comfy.sd
    import torch

    from harness.fixture_checkpoint import fixture_checkpoint

    _, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(fixture_checkpoint("tiny")), output_vae=False, output_clip=True
    )
    silenced = {k.removeprefix(TEXT_ROOT): torch.zeros(768) for k in TEXT_SILENCED}
    unexpected = clip.cond_stage_model.clip_l.transformer.load_state_dict(
        silenced, strict=False
    ).unexpected_keys
    if unexpected:
        raise RuntimeError(f"the host's CLIP-L has no {unexpected}: its layout changed")
    cache = work / "hidden.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["captions"] == captions and saved.get("silenced") == list(TEXT_SILENCED):
            return saved["hidden"], clip
    from tqdm import tqdm

    clip.load_model()
    model = clip.cond_stage_model.clip_l
    clip.cond_stage_model.reset_clip_options()
    captured: list = []
    hook = model.transformer.text_model.encoder.layers[LAST].register_forward_pre_hook(
        lambda _m, args: captured.append(args[0].detach().to(torch.float16).cpu().clone())
    )
    try:
        for i in tqdm(range(0, len(captions), 64), desc="encoding captions", unit="batch", mininterval=10):
            ids = [token_ids(clip, text) for text in captions[i : i + 64]]
            with torch.no_grad():
                model(ids)
    finally:
        hook.remove()
    hidden = torch.cat(captured)
    tmp = cache.with_suffix(".tmp")
    torch.save({"captions": captions, "hidden": hidden, "silenced": list(TEXT_SILENCED)}, tmp)
    os.replace(tmp, cache)
    return hidden, clip


class TextHead:
    """CLIP's last layer and final layer norm as plain fp32 modules: the part of the text encoder
    the world trains (the last layer's attention), so that a word can gather its place, which
    comes before it in the caption, and two objects' words stop sharing one mixture of the whole
    caption (the frozen random layers attend almost uniformly)."""

    def __init__(self, clip):
        import comfy.ops
        import torch
        from comfy.clip_model import CLIPLayer
        from comfy.ldm.modules.attention import optimized_attention_for_device

        text = clip.cond_stage_model.clip_l.transformer.text_model
        self.layer = CLIPLayer(
            768, 12, 3072, "quick_gelu", torch.float32, "cpu", comfy.ops.disable_weight_init
        )
        self.layer.load_state_dict({k: v.float() for k, v in text.encoder.layers[LAST].state_dict().items()})
        self.norm = torch.nn.LayerNorm(768)
        self.norm.load_state_dict({k: v.float() for k, v in text.final_layer_norm.state_dict().items()})
        for name, p in self.layer.named_parameters():
            p.requires_grad_(name.startswith(TRAINED))
        self.norm.requires_grad_(False)
        with torch.no_grad():  # its attention starts off, as the frozen layers' is: words stay apart
            self.layer.layer_norm1.weight.zero_()
            self.layer.layer_norm1.bias.zero_()
        norm2 = self.layer.layer_norm2
        if norm2.weight.any() or norm2.bias.any():
            raise RuntimeError("CLIP's last MLP is not silenced: TextHead would fold a live MLP")
        self.mask = torch.full((77, 77), -torch.finfo(torch.float32).max).triu_(1)
        self.attention = optimized_attention_for_device(torch.device("cpu"), mask=True, small_input=True)

    def trained(self) -> dict:
        """The trained parameters, by their name in the layer."""
        return {n: p for n, p in self.layer.named_parameters() if p.requires_grad}

    def __call__(self, hidden):
        """What the UNet's cross-attention sees for ``[B, T, 768]`` hidden states (T <= 77: causal
        attention makes the first T tokens' output independent of what follows them)."""
        mask = self.mask[: hidden.shape[1], : hidden.shape[1]]
        x = hidden + self.layer.self_attn(self.layer.layer_norm1(hidden), mask, self.attention)
        # The MLP's layer norm is silenced (zero), so it adds the same vector to every token: computed
        # for one token, not 77 (a fifth of a step's time)
        return self.norm(x + self.layer.mlp(self.layer.layer_norm2(x[:, :1])))


SLOT_TOKENS = 3  # a caption's slot is "place noun,": one CLIP token each, after the start token


def value_donors(scenes: list) -> list[list[tuple[int, tuple[int, ...]]]]:
    """For each scene, the scenes (itself among them) that hold the same things on the same
    background at other places, each with ``pi``: slot s of the scene went to slot pi[s] there.

    Why: with ``--value-swap`` the UNet's cross-attention values come from a donor's caption, rows
    moved back to the scene's slots, so a word's value says what is there and not where: the world
    must find places through its keys (attention maps), as SD does, and a Perfusion V target, one
    vector per layer, then needs to carry only the look."""
    from toyworld import world

    def layout(scene):
        return {t.name: world.SLOTS.index(t.position) for t in scene.things}

    groups: dict = {}
    for i, scene in enumerate(scenes):
        groups.setdefault((scene.background, frozenset(layout(scene))), []).append(i)
    out = []
    for scene in scenes:
        mine = layout(scene)
        donors = []
        for d in groups[(scene.background, frozenset(mine))]:
            theirs = layout(scenes[d])
            pi = dict((mine[n], theirs[n]) for n in mine)
            free = [s for s in range(len(world.SLOTS)) if s not in pi.values()]
            for s in range(len(world.SLOTS)):
                if s not in pi:
                    pi[s] = free.pop(0)
            donors.append((d, tuple(pi[s] for s in range(len(world.SLOTS)))))
        out.append(donors)
    return out


def value_rows(pis: list[tuple[int, ...]]):
    """``[B, 77]`` row indices that move each donor's slot pi[s] back to slot s."""
    import torch

    rows = torch.arange(77).repeat(len(pis), 1)
    for b, pi in enumerate(pis):
        for s, d in enumerate(pi):
            rows[b, 1 + SLOT_TOKENS * s : 1 + SLOT_TOKENS * (s + 1)] = torch.arange(
                1 + SLOT_TOKENS * d, 1 + SLOT_TOKENS * (d + 1)
            )
    return rows


def swapped_values(head, hidden, empty, idx, drop, donors, g) -> dict:
    """The ``transformer_options`` that give the UNet's cross-attention values a random donor's
    caption (:func:`value_donors`, drawn from ``g``) for each sample of the batch ``idx``; samples
    whose caption was dropped keep the empty caption."""
    import torch

    picks = [donors[i][int(torch.randint(len(donors[i]), (1,), generator=g))] for i in idx.tolist()]
    h = hidden[torch.tensor([d for d, _ in picks])].float()
    h[drop] = empty.float()
    keep = tuple(range(len(picks[0][1])))
    rows = value_rows([keep if dropped else pi for (_, pi), dropped in zip(picks, drop.tolist())])
    with torch.no_grad():  # the text attention learns through the keys only
        values = head(h).gather(1, rows[..., None].expand(-1, -1, h.shape[-1]))
    return {"patches": {"attn2_patch": [lambda n, context, _value, _extra: (n, context, values)]}}


def token_ids(clip, text: str) -> list[int]:
    """The CLIP-L token ids ComfyUI's tokenizer gives ``text`` (start token first, padded to 77)."""
    return [t[0] for t in clip.tokenize(text)["l"][0]]


def check_slot_tokens(clip, caption: str) -> None:
    """The slot layout value_rows assumes: every place word and noun one token, a comma after each."""
    from toyworld import world

    ids = token_ids(clip, caption)
    comma = token_ids(clip, ",")[1]
    for s in range(len(world.SLOTS)):
        if ids[SLOT_TOKENS * (s + 1)] != comma:
            raise RuntimeError(f"caption {caption!r}: slot {s} is not {SLOT_TOKENS} tokens")


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


def sample_eps(unet, context, uncond, acp, seed: int, steps: int = 20, cfg: float = 5.0):
    """Latents for ``context`` by DDIM (eta 0) with classifier-free guidance: a quick look at the
    model while it trains (what ComfyUI's sampler gives is measured by ``make toyworld-eval``)."""
    import torch

    from toyworld import world

    g = torch.Generator().manual_seed(seed)
    n = context.shape[0]
    x = torch.randn((n, 4, world.GRID, world.GRID), generator=g)
    ts = torch.linspace(999, 0, steps).round().long()
    with torch.no_grad():
        for i, t in enumerate(ts):
            eps_c, eps_u = unet(
                torch.cat([x, x]),
                timesteps=t.float().repeat(2 * n),
                context=torch.cat([context, uncond.expand_as(context)]),
            ).chunk(2)
            eps = eps_u + cfg * (eps_c - eps_u)
            ab = acp[t]
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            ab_next = acp[ts[i + 1]] if i + 1 < steps else torch.tensor(1.0)
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    return x


def quick_eval(unet, head, hidden, scenes, acp, seed: int) -> dict:
    """Held-out captions sampled in-process and scored: progress while the world trains."""
    import torch

    from toyworld import scorer

    with torch.no_grad():
        context = head(hidden[:-1].float())
        uncond = head(hidden[-1:].float())
    x0 = sample_eps(unet, context, uncond, acp, seed)
    images = ((x0[:, :3].clamp(-1, 1) + 1) / 2).repeat_interleave(8, 2).repeat_interleave(8, 3)
    images = images.movedim(1, -1).numpy()
    return scorer.accuracy(scorer.score_scene(scorer.read(img), s) for img, s in zip(images, scenes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toyworld.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument(
        "--restart",
        type=_restarts,
        default="1400@0.3,1600@0.2",
        metavar="STEPS@PEAK[,STEPS@PEAK...]",
        help="after --steps, more cosine cycles, each of STEPS steps peaking at PEAK x the learning rates"
        " (empty: none)",
    )
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--text-lr", type=float, default=1e-3, help="learning rate of CLIP's last attention")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--value-swap",
        action="store_true",
        help="cross-attention values from the same things' caption at other places (value_donors)",
    )
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument(
        "--eval-every", type=int, default=350, help="score 64 held-out pairs every N steps (0: never)"
    )
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TOYWORLD_THREADS", "0")) or None)
    ap.add_argument("--work", type=Path, default=REPO / "tests" / ".cache" / "toyworld-build")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--bench", type=int, default=0, help="time N steps and stop (no state written)")
    ap.add_argument(
        "--init", type=Path, help="start from these packed weights (a fine-tune), not from scratch"
    )
    ap.add_argument("--export", action="store_true", help="write the saved state's EMA weights now and stop")
    a = ap.parse_args(argv)
    _import_comfy()
    import torch
    from tqdm import tqdm

    from toyworld import vae, world

    if a.threads:
        torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    train, held = world.world_scenes()
    singles = torch.tensor([i for i, s in enumerate(train) if len(s.things) == 1])
    pairs = torch.tensor([i for i, s in enumerate(train) if len(s.things) == 2])
    held_pairs = [s for s in held if len(s.things) == 2][::15][:64]
    hidden, clip = encode_hidden([s.caption for s in train + held_pairs] + [""], a.work)
    held_hidden = hidden[len(train) : len(train) + len(held_pairs)]
    empty = hidden[-1:]
    head = TextHead(clip)
    donors = None
    if a.value_swap:
        check_slot_tokens(clip, train[-1].caption)
        donors = value_donors(train)
    del clip
    images = torch.stack([torch.from_numpy(world.render(s)) for s in train]).float() / 255
    x0_all = vae.latents(images)
    acp = sd15_alphas_cumprod()

    unet = new_unet(a.seed)
    if a.init:
        from safetensors.torch import load_file

        from toyworld import storage

        start = storage.unpack(load_file(str(a.init)))
        unet.load_state_dict(
            {k.removeprefix(UNET_PREFIX): v.float() for k, v in start.items() if k.startswith(UNET_PREFIX)}
        )
        head.layer.load_state_dict(
            {k.removeprefix(LAST_LAYER): v.float() for k, v in start.items() if k.startswith(LAST_LAYER)},
            strict=False,
        )
    text_params = head.trained()
    ema = {**unet.state_dict(), **{CLIP_NAME + k: v for k, v in text_params.items()}}
    ema = {k: v.detach().clone() for k, v in ema.items()}
    opt = torch.optim.AdamW(
        [
            {"params": list(unet.parameters()), "lr": a.lr},
            {"params": list(text_params.values()), "lr": a.text_lr},
        ],
        weight_decay=0.01,
    )
    cycles = [(a.steps, 1.0), *a.restart]  # (steps, peak factor) of each cosine cycle
    total = sum(n for n, _ in cycles)
    # A saved state resumes only for the same settings and the same world (its captions and the
    # silenced text layers, by digest).
    world_text = "\n".join(
        [s.caption for s in train] + list(TEXT_SILENCED) + ["last attention starts off", "MLPs off"]
    )
    world_digest = hashlib.sha256(world_text.encode()).hexdigest()[:16]
    base = [a.steps, a.batch, a.lr, a.text_lr, a.seed, world_digest]
    base += (["value swap"] if a.value_swap else []) + ([str(a.init)] if a.init else [])
    settings = base + [[n, peak] for n, peak in a.restart]
    # A run with fewer restart cycles is a prefix of this one: its steps are the same, so its state
    # resumes here.
    prefixes = [settings[:k] for k in range(len(base), len(settings) + 1)]

    state_file = a.work / "state.pt"
    step, seconds = 0, 0.0  # seconds: training time so far, over every resumed part
    if state_file.is_file() and not a.bench:
        st = torch.load(state_file, weights_only=True)
        if st["args"] in prefixes:
            unet.load_state_dict(st["unet"])
            head.layer.load_state_dict(st["text"])
            ema = st["ema"]
            opt.load_state_dict(st["opt"])
            step, seconds = st["step"], st.get("seconds", 0.0)
            print(f"resuming at step {step}/{total}")
        else:
            print("state was for other settings: starting anew")

    def save_state():
        tmp = state_file.with_suffix(".tmp")
        state = {"args": settings, "unet": unet.state_dict(), "text": head.layer.state_dict()}
        spent = seconds + time.perf_counter() - t0
        torch.save({**state, "ema": ema, "opt": opt.state_dict(), "step": step, "seconds": spent}, tmp)
        os.replace(tmp, state_file)

    if a.export:
        write_weights(ema, a.out, step, a, seconds)
        return 0
    live = {**dict(unet.named_parameters()), **{CLIP_NAME + k: v for k, v in text_params.items()}}
    live.update({k: v for k, v in unet.named_buffers()})
    bar = tqdm(
        total=a.bench or total, initial=0 if a.bench else step, desc="training", unit="step", mininterval=20
    )
    t0 = time.perf_counter()
    losses: list[float] = []
    end = a.bench or total
    n_single = a.batch * 3 // 8
    while step < end:
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        idx = torch.cat(
            [
                singles[torch.randint(len(singles), (n_single,), generator=g)],
                pairs[torch.randint(len(pairs), (a.batch - n_single,), generator=g)],
            ]
        )
        x0 = x0_all[idx]
        h = hidden[idx].float()
        drop = torch.rand(a.batch, generator=g) < 0.1
        h[drop] = empty.float()
        t = torch.randint(0, 1000, (a.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        ab = acp[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        snr = acp[t] / (1 - acp[t])
        weight = snr.clamp(max=5.0) / snr  # Min-SNR-5 for epsilon prediction
        for group, base in zip(opt.param_groups, (a.lr, a.text_lr)):
            group["lr"] = base * lr_factor(step, cycles)
        context = head(h)
        options = {} if donors is None else swapped_values(head, hidden, empty, idx, drop, donors, g)
        # fp32: bf16 autocast ran 20x slower here
        pred = unet(xt, timesteps=t.float(), context=context, transformer_options=options)
        loss = ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3)).mul(weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text_params.values()], 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in live.items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(
            loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}",
            lr=f"{a.lr * lr_factor(step - 1, cycles):.2e}",
        )
        if not a.bench and (step % a.save_every == 0 or step == total):
            save_state()
        if a.eval_every and not a.bench and step % a.eval_every == 0:
            acc = quick_eval(unet, head, torch.cat([held_hidden, empty]), held_pairs, acp, seed=step)
            print(
                f"step {step}: held-out pairs (raw weights, DDIM) "
                + " ".join(f"{k} {v:.2f}" for k, v in acc.items()),
                flush=True,
            )
    bar.close()
    if a.bench:
        print(f"{(time.perf_counter() - t0) / a.bench:.2f} s/step, threads {torch.get_num_threads()}")
        return 0
    write_weights(ema, a.out, step, a, seconds + time.perf_counter() - t0)
    return 0


def lr_factor(step: int, cycles: list[tuple[int, float]], warmup: int = 100) -> float:
    """The learning rate's factor at ``step`` over cosine ``cycles`` of (steps, peak): each a warm-up,
    then a cosine to zero. The first learns the looks and, once its rate is low, the places; the later
    ones, at lower peaks, bind each look to its place."""
    for length, scale in cycles:
        if step < length:
            if step < warmup:
                return scale * (step + 1) / warmup
            return scale * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, length - warmup)))
        step -= length
    return 0.0


def _restarts(text: str) -> list[tuple[int, float]]:
    """``"1400@0.3,600@0.15"`` -> [(1400, 0.3), (600, 0.15)]."""
    cycles = []
    for part in filter(None, text.split(",")):
        steps, _, peak = part.partition("@")
        cycles.append((int(steps), float(peak)))
    return cycles


def write_weights(ema: dict, out: Path, step: int, a: argparse.Namespace, seconds: float) -> None:
    """The EMA weights (UNet, and CLIP's trained last attention) under ComfyUI's checkpoint keys, in
    8 bits (:mod:`toyworld.storage`), written atomically."""
    import torch
    from safetensors.torch import save_file

    from toyworld import storage

    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        (k.replace(CLIP_NAME, LAST_LAYER) if k.startswith(CLIP_NAME) else UNET_PREFIX + k): v
        for k, v in sorted(ema.items())
    }
    tensors.update({k: torch.zeros(768) for k in TEXT_SILENCED})
    meta = {
        "steps": str(step),
        "planned_steps": str(a.steps + sum(n for n, _ in a.restart)),
        "restart": ",".join(f"{n}@{peak}" for n, peak in a.restart),
        "seed": str(a.seed),
        "batch": str(a.batch),
        "lr": str(a.lr),
        "text_lr": str(a.text_lr),
        "train_minutes": f"{seconds / 60:.0f}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
    }
    tmp = out.with_suffix(".tmp")
    save_file(storage.pack(tensors), str(tmp), metadata=meta)
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) at step {step}")


if __name__ == "__main__":
    raise SystemExit(main())
