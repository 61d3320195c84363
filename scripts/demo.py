"""`make demo`: train two Perfusion concepts, generate them where prompts put them, sweep the gate
bias and combine both in one image, all through ComfyUI's real executor (headless, in this process).

By default on the toy world (:mod:`toyworld.demo`: a tiny SD1.5-layout model trained on scenes of
coloured blocks, shipped with the repository), where the result can be seen on a CPU. With
``--checkpoint`` (or ``$PERFUSION_CHECKPOINT``) on a real SD1.5 and the bundled photos, writing into
the output folder (default ``<repo>/output``):

* ``hugsy_bias_<b>.png`` - one image per bias, ``hugsy_bias_sweep.png`` - them side by side, labelled;
* ``hugsy_and_zorbo.png`` - both concepts in one prompt;
* ``loss_<word>.png`` - the training loss curves; ``concepts/<word>.safetensors`` - the concept files.

ComfyUI's base directory (models, inputs, the covariance cache) lives in ``<output>/demo-run``, so a
second run skips the one-off covariance computation.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.demo_steps import Progress, copy_image, labelled_row, run
from harness.paths import use_cpu
from harness.perfusion_graphs import ConceptUse, generate_prompt, train_prompt
from perfusion_core.defaults import COVARIANCE_PROMPTS
from perfusion_core.training import TrainingConfig

REPO = Path(__file__).resolve().parents[1]

IMAGES = REPO / "assets" / "demo_images"  # not examples/: ComfyUI serves that folder as templates
CHECKPOINT_ENV = "PERFUSION_CHECKPOINT"


@dataclass(frozen=True)
class ConceptSpec:
    word: str
    superclass: str


HUGSY = ConceptSpec("hugsy", "teddy")
ZORBO = ConceptSpec("zorbo", "cat")


@dataclass(frozen=True)
class Settings:
    """How hard to work on a real model: the paper's recipe, or minimal (--quick)."""

    train_steps: int
    batch_size: int
    grad_accumulation: int
    lr_v: float
    lr_embedding: float
    train_resolution: int
    covariance_prompts: int
    sample_steps: int
    size: int
    biases: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8)


def choose_settings(quick: bool, steps: int | None) -> Settings:
    if quick:
        s = Settings(4, 1, 1, 0.3, 0.02, 64, 64, 2, 64, biases=(0.4, 0.8))
    else:
        paper = TrainingConfig()
        s = Settings(
            paper.steps,
            paper.batch_size,
            paper.grad_accumulation,
            paper.lr_v,
            paper.lr_embedding,
            paper.resolution,
            COVARIANCE_PROMPTS,
            30,
            512,
        )
    if steps is not None:
        s = dataclasses.replace(s, train_steps=steps)
    return s


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=os.environ.get(CHECKPOINT_ENV) or None,
        help=f"an SD1.5 checkpoint (.safetensors); default ${CHECKPOINT_ENV}, else the toy world",
    )
    ap.add_argument(
        "--output", type=Path, default=REPO / "output", help="where results go (default: output/)"
    )
    ap.add_argument("--steps", type=int, default=None, help="training steps per concept")
    ap.add_argument("--quick", action="store_true", help="minimal steps and sizes (used by the tests)")
    args = ap.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        ap.error("--steps must be at least 1")
    if args.checkpoint is not None and not args.checkpoint.expanduser().is_file():
        ap.error(f"checkpoint {args.checkpoint} does not exist (from --checkpoint or ${CHECKPOINT_ENV})")
    return args


def train(host, ckpt: str, spec: ConceptSpec, s: Settings, out: Path, progress: Progress) -> str:
    """Trains and saves one concept; returns its file name in models/perfusion."""
    names = sorted(p.name for p in IMAGES.glob(f"{spec.word}_*.png"))
    if not names:
        raise RuntimeError(f"no sample images {IMAGES}/{spec.word}_*.png")
    for name in names:
        shutil.copyfile(IMAGES / name, host.layout.input / name)
    prompt = train_prompt(
        ckpt,
        names,
        word=spec.word,
        superclass=spec.superclass,
        steps=s.train_steps,
        batch_size=s.batch_size,
        grad_accumulation=s.grad_accumulation,
        lr_v=s.lr_v,
        lr_embedding=s.lr_embedding,
        resolution=s.train_resolution,
        covariance_prompts=s.covariance_prompts,
        save_name=spec.word,
        overwrite=True,
    )
    label = f"train {spec.word} ({spec.superclass}, {len(names)} images)"
    result = run(host, prompt, progress, label)
    copy_image(host, result, prompt.node("PreviewImage").id, out / f"loss_{spec.word}.png")  # the loss curve
    file = f"{spec.word}.safetensors"
    (out / "concepts").mkdir(exist_ok=True)
    shutil.copyfile(host.layout.perfusion / file, out / "concepts" / file)
    return file


def generate(
    host, ckpt: str, uses: Sequence[ConceptUse], positive: str, s: Settings, progress, label, dest: Path
) -> Path:
    """Samples ``positive`` with ``uses``; the image, copied to ``dest``."""
    prompt = generate_prompt(
        ckpt, uses, positive=positive, steps=s.sample_steps, size=s.size, seed=7, filename_prefix="demo"
    )
    result = run(host, prompt, progress, label)
    return copy_image(host, result, prompt.node("SaveImage").id, dest)


def covariance_cached(host) -> bool:
    folder = host.layout.user / "perfusion" / "covariance"
    return folder.is_dir() and any(folder.iterdir())


class _StartupFilter(logging.Filter):
    """Hides ComfyUI's start-up warnings (optional extras such as torchaudio missing); a pack that fails
    to import still stops the demo with ComfyUI's import log."""

    starting = True

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.starting or record.levelno >= logging.ERROR


def configure_logging() -> _StartupFilter:
    startup = _StartupFilter()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("  %(levelname)s %(message)s"))
    handler.addFilter(startup)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("comfyui-perfusion").setLevel(logging.INFO)  # e.g. "computing the covariance"
    return startup


def start_host(args: argparse.Namespace, out: Path):
    """The in-process host with the checkpoint; its ckpt_name."""
    from harness.inprocess import ComfyHost

    if args.checkpoint is not None:
        source = args.checkpoint.expanduser().resolve()
    else:
        from toyworld.checkpoint import toyworld_checkpoint

        source = toyworld_checkpoint()
    host = ComfyHost.get(out / "demo-run", checkpoints=[source], load_pack=True)
    print(f"ComfyUI started in {host.startup_s:.1f}s (base dir {host.base_dir})", flush=True)
    return host, source.name


def demo(args: argparse.Namespace) -> list[Path]:
    os.environ.setdefault("TQDM_DISABLE", "1")  # ComfyUI's sampler bars would interleave with ours
    startup = configure_logging()
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is None:
        from toyworld.demo import NOTE, run_demo

        print(f"checkpoint: {NOTE}; output: {out}", flush=True)
        host, ckpt = start_host(args, out)
        startup.starting = False
        progress = Progress()
        written = run_demo(host, ckpt, out, quick=args.quick, steps=args.steps, progress=progress)
        print(f"[{time.perf_counter() - progress.t0:6.1f}s] done", flush=True)
        return written
    return real_checkpoint_demo(args, out, startup)


def real_checkpoint_demo(args: argparse.Namespace, out: Path, startup: _StartupFilter) -> list[Path]:
    s = choose_settings(args.quick, args.steps)
    print(f"checkpoint: {args.checkpoint}")
    print(
        f"settings: {s.train_steps} training steps (batch {s.batch_size} x {s.grad_accumulation}) at "
        f"{s.train_resolution} px, {s.sample_steps} sampling steps at {s.size} px; output: {out}",
        flush=True,
    )
    if use_cpu():
        print(
            "note: no GPU found, so ComfyUI runs on the CPU: the full recipe on a real SD1.5 takes hours "
            "there; try --steps 20 for a first look, or run it on a GPU machine",
            flush=True,
        )
    host, ckpt = start_host(args, out)
    startup.starting = False
    progress = Progress()
    if not covariance_cached(host):
        print(
            f"first run: the text-encoding covariance is computed over {s.covariance_prompts} prompts "
            "before training starts (cached afterwards)",
            flush=True,
        )

    written = []
    hugsy = train(host, ckpt, HUGSY, s, out, progress)
    positive = f"a photo of {HUGSY.word} on the beach"
    tiles = []
    superclass = f"a photo of a {HUGSY.superclass} on the beach"
    plain = generate(host, ckpt, [], superclass, s, progress, "no concept", out / "hugsy_no_concept.png")
    tiles.append(("no concept", plain))
    for bias in s.biases:
        label, dest = f"bias {bias:.2f}", out / f"hugsy_bias_{bias:.2f}.png"
        image = generate(host, ckpt, [ConceptUse(hugsy, bias=bias)], positive, s, progress, label, dest)
        tiles.append((label, image))
    written += [p for _, p in tiles]
    written.append(
        labelled_row(tiles, f'"{positive}" - lower bias = stronger concept', out / "hugsy_bias_sweep.png")
    )

    zorbo = train(host, ckpt, ZORBO, s, out, progress)
    uses = [ConceptUse(hugsy), ConceptUse(zorbo)]  # at the inference bias
    both = f"a photo of {HUGSY.word} and {ZORBO.word} on the beach"
    written.append(generate(host, ckpt, uses, both, s, progress, "two concepts", out / "hugsy_and_zorbo.png"))
    written += [out / f"loss_{c.word}.png" for c in (HUGSY, ZORBO)]
    written += [out / "concepts" / f for f in (hugsy, zorbo)]
    print(f"[{time.perf_counter() - progress.t0:6.1f}s] done", flush=True)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        written = demo(args)
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every failure ends in one readable message and a non-zero exit
        print(f"\ndemo failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"\nwrote {len(written)} files in {time.perf_counter() - t0:.0f}s:")
    for path in written:
        print(f"  {path}")
    if args.checkpoint is None:
        from toyworld.demo import NOTE

        print(f"note: {NOTE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
