"""i* cadence and the covariance C, by measurement (issue item "i* and C, by measurement").

    .venv/bin/python -m benchmarks.istar_and_covariance            # full study: ~30 CPU-minutes
    .venv/bin/python -m benchmarks.istar_and_covariance --quick    # smoke run: ~2.5 minutes
    .venv/bin/python -m benchmarks.istar_and_covariance --budget 540   # stop after ~9 min; rerun to go on

One torch thread by default (--threads): on the shared 2-core VM the full study took ~30 CPU-minutes,
~45 minutes of wall time in 7 budget-limited invocations (exit status 3 = "run me again"). A rerun with
everything cached only re-evaluates (~1.5 minutes).

Part A, i* cadence: the same concept trained with `i_star_per_micro_batch` False (EMA once per optimizer
step, ours) and True (after every micro-batch, the reference code), same seeds, batch × accumulation so
that the two differ. Metrics: the concept token's r(e) = eᵀu / i*ᵀu and gate (β 0.7, τ 0.15) at its
position in held-out prompts with the learned embedding; the gate on every other token of held-out
prompts; the training objective on a fixed batch before/after (TrainingResult.eval_before/after).

Part B, C from N prompts: C is accumulated over `prompt_corpus(max N)` and snapshotted at each N; for
every (N, ridge) u = C⁻¹ i* is re-derived from the i* of the concepts trained in part A with today's C
(N 2000, ridge 1e-6, per-step cadence), and r and the gate are read on held-out prompts (a different
corpus seed with every estimation prompt removed, plus hand-written prompts), split by token kind.

Everything runs on the tiny random-weight fixture (one-level UNet, full-size random CLIP-L) through
the real host and the pack's own trainer: a mechanism measurement, not a claim about real SD1.5.

Work (the running second moment, held-out encodings, trained concepts) is cached under --base, so an
interrupted or budget-limited run goes on where it stopped; results go to
benchmarks/results/istar_covariance.json (--quick: istar_covariance_quick.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.host import load_checkpoint, pack, start_host
from harness.sample_images import write_toy_images
from perfusion_core.defaults import COVARIANCE_PROMPTS, INFERENCE_BIAS, INFERENCE_TEMPERATURE
from perfusion_core.gated_edit import GatedRank1Edit

ROOT = Path(__file__).resolve().parents[1]

WORD, SUPERCLASS = "hugsy", "teddy"
KINDS = ("start", "words", "words_after", "end", "padding", "concept")

# Prompts no generator wrote: the held-out check that does not share the corpus' word lists.
HAND_WRITTEN = (
    "portrait of an old fisherman with a grey beard, dramatic lighting",
    "a cozy living room with a fireplace and a sleeping dog",
    "cyberpunk city street at night, neon signs, rain, reflections, cinematic, 8k",
    "two children flying a kite on a windy hill",
    "a bowl of ramen with a soft boiled egg",
    "sunset over the ocean",
    "an astronaut riding a horse on the moon",
    "macro photograph of a dragonfly on a leaf, morning dew",
    "the interior of a gothic cathedral, stained glass windows, volumetric light",
    "a red sports car parked in front of a modern glass house",
    "watercolor illustration of a fox in a snowy forest",
    "a medieval castle on a cliff above a stormy sea, matte painting, highly detailed, artstation",
    "logo of a coffee shop, minimalist, flat design",
    "a black and white photo of a jazz band playing in a small club",
    "isometric pixel art of a tiny island with a lighthouse",
    "a plate of sushi on a wooden table",
    "an elderly woman knitting a scarf by the window",
    "a herd of elephants crossing a river at dawn, national geographic",
    "close-up of a vintage typewriter",
    "studio photo of a ceramic vase with dried flowers, soft shadows, 50mm",
    "a mountain lake reflecting pine trees, autumn colors, ultra wide angle, hdr",
    "a robot reading a book in a library",
    "street food market in bangkok, crowded, evening, warm light",
    "a child's drawing of a house with a sun",
    "a sprawling fantasy marketplace under a canopy of glowing lanterns, merchants selling spices, "
    "silk and strange fruit, a juggler performing for a crowd of children, cobblestone streets wet "
    "from the rain, towering spires in the distance, golden hour light, intricate details, concept "
    "art, sharp focus, by a famous illustrator, masterpiece, best quality, trending on artstation",
)

# Concept prompts none of the training templates use (one 77-token chunk each).
CONCEPT_PROMPTS = (
    "{} on the beach",
    "a watercolor painting of a {}",
    "a {} sitting on a wooden chair in a sunny kitchen",
    "an oil painting of the {} wearing a red hat, trending on artstation",
    "a photo of a {} next to a cat",
    "the {} in the snow",
    "a close up of a {} on a bookshelf, soft light, 50mm",
    "a {} floating in space, stars in the background, digital art",
    "a child holding a {} in a park",
    "pencil sketch of a {}",
    "a {} and a toy car on a bed",
    "{}",
)


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]  # N: prompts C is estimated from (snapshots of one running sum)
    ridges: tuple[float, ...]  # relative to C's mean diagonal (invert_covariance)
    seeds: tuple[int, ...]
    steps: int
    batch_size: int
    grad_accumulation: int
    resolution: int
    heldout: int  # generated held-out prompts (corpus seed 1, estimation prompts removed)
    train_prompts: int  # N of the C the concepts are trained with (today's node default)
    train_ridge: float  # ... and its ridge (today's default)

    @property
    def tag(self) -> str:
        return (
            f"n{'-'.join(map(str, self.sizes))}_s{self.steps}_b{self.batch_size}x{self.grad_accumulation}"
            f"_r{self.resolution}_t{self.train_prompts}-{self.train_ridge:g}"
        )


FULL = Settings(
    sizes=(128, 250, 500, 1000, 2000),
    ridges=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
    seeds=(0, 1, 2),
    steps=40,
    batch_size=2,
    grad_accumulation=4,
    resolution=64,
    heldout=200,
    train_prompts=COVARIANCE_PROMPTS,
    train_ridge=1e-6,
)
QUICK = Settings(
    sizes=(32, 64),
    ridges=(1e-6, 1e-3),
    seeds=(0,),
    steps=3,
    batch_size=2,
    grad_accumulation=4,
    resolution=64,
    heldout=16,
    train_prompts=64,
    train_ridge=1e-6,
)


class OutOfBudget(Exception):
    pass


def machine() -> dict:
    import comfyui_version  # ComfyUI's own module (on sys.path once the host is up)

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "comfyui": getattr(comfyui_version, "__version__", "?"),
        "load_average": os.getloadavg(),
    }


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Study:
    def __init__(self, args, settings: Settings) -> None:
        self.args, self.s = args, settings
        self.started = time.monotonic()
        self.host = start_host(args.base, ("tiny",))
        torch.set_num_threads(args.threads)  # the host may have changed it
        self.pack = pack(self.host)
        for sub in ("nodes.trainer", "nodes.text_encoder", "perfusion_core.training"):
            __import__(f"{self.pack.__name__}.{sub}")
        with torch.inference_mode():  # as the executor loads it
            self.model, self.clip, self.vae = load_checkpoint(self.host, "tiny")
        self.te = self.pack.nodes.text_encoder
        inner = getattr(self.clip.tokenizer, self.clip.tokenizer.clip)
        self.start_id, self.end_id = inner.start_token, inner.end_token
        self.work = args.base / "istar_covariance" / settings.tag
        (self.work / "runs").mkdir(parents=True, exist_ok=True)
        self.log(f"host up, work in {self.work}")

    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f}s] {text}", flush=True)

    def check_budget(self, need: float = 0.0) -> None:
        if self.args.budget and time.monotonic() - self.started + need > self.args.budget:
            raise OutOfBudget

    # ---- encoding with token kinds ------------------------------------------------------------------

    def encode(self, clip, prompts: list[str], marked=None) -> tuple[torch.Tensor, np.ndarray]:
        """(rows·77, D) float64 encodings of every chunk of `prompts` and each position's kind
        (index into KINDS); `marked(token)` picks the token reported as "concept" (the concept
        word's embedding, or the superclass word in superclass prompts)."""
        key = self.te.text_encoders(clip)[0].key  # an SD1.5 benchmark: one text encoder
        sequences, kinds = [], []
        for prompt in prompts:
            for chunk in clip.tokenize(prompt, disable_weights=True)[key]:
                labels, seen_end, seen_concept = [], False, False
                for i, pair in enumerate(chunk):
                    token = pair[0]
                    is_int = isinstance(token, int)
                    if marked is not None and marked(token):
                        labels.append(KINDS.index("concept"))
                        seen_concept = True
                    elif i == 0 and is_int and token == self.start_id:
                        labels.append(KINDS.index("start"))
                    elif seen_end:
                        labels.append(KINDS.index("padding"))
                    elif is_int and token == self.end_id:
                        labels.append(KINDS.index("end"))
                        seen_end = True
                    else:
                        labels.append(KINDS.index("words_after" if seen_concept else "words"))
                sequences.append(chunk)
                kinds.extend(labels)
        out = []
        with torch.inference_mode():
            for i in range(0, len(sequences), 32):
                cond = clip.encode_from_tokens({key: sequences[i : i + 32]})
                out.append(cond.reshape(-1, cond.shape[-1]).double().cpu())
        return torch.cat(out), np.asarray(kinds)

    # ---- C: one running second moment, snapshots at each N -----------------------------------------

    def covariance(self) -> dict:
        from perfusion_core.covariance import SecondMomentAccumulator
        from perfusion_core.prompt_corpus import CORPUS_VERSION, prompt_corpus

        path = self.work / "second_moment.pt"
        fingerprint = self.te.encoder_fingerprint(self.clip)
        state = torch.load(path, weights_only=False) if path.exists() else None
        if state is None or state["fingerprint"] != fingerprint or state["corpus"] != CORPUS_VERSION:
            state = {"fingerprint": fingerprint, "corpus": CORPUS_VERSION, "done": 0, "sum": None}
            state.update(count=0.0, snapshots={}, seconds=0.0, chunks=0)
        prompts = prompt_corpus(max(self.s.sizes))
        if state["done"] < len(prompts):
            self.log(f"C: {state['done']} of {len(prompts)} prompts encoded; going on")
        bounds = sorted(set(self.s.sizes))
        while state["done"] < len(prompts):
            self.check_budget(30)
            start = state["done"]
            stop = min(start + 32, next(n for n in bounds if n > start))
            t0, cpu0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                enc = self.pack.nodes.covariance_cache.encode_batch(self.clip, prompts[start:stop])
            batch = SecondMomentAccumulator()  # C of this batch, folded into the running sum
            batch.add(enc.float())
            state["seconds"] += time.perf_counter() - t0
            # CPU time too: on a shared machine the wall-clock rate depends on the neighbours' load
            state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + time.process_time() - cpu0
            state["cpu_prompts"] = state.get("cpu_prompts", 0) + stop - start
            state["chunks"] += int(enc.shape[0])
            total = batch.matrix() * batch.count
            state["sum"] = total if state["sum"] is None else state["sum"] + total
            state.update(done=stop, count=state["count"] + batch.count)
            if stop in bounds:
                c = state["sum"] / state["count"]
                state["snapshots"][stop] = (c + c.T) / 2
            _save(state, path)  # every batch: a budget stop loses nothing
            if stop in bounds or stop % 128 == 0:
                rate = state["done"] / state["seconds"]
                self.log(f"C: {stop}/{len(prompts)} prompts, {rate:.2f} prompts/s")
        rate = state["done"] / state["seconds"]
        self.snapshots = {n: state["snapshots"][n] for n in self.s.sizes}
        self.estimation_prompts = set(prompts)
        return {
            "prompts_encoded": state["done"],
            "chunks_encoded": state["chunks"],
            "encode_seconds": state["seconds"],
            "prompts_per_s": rate,
            "prompts_per_cpu_s": state.get("cpu_prompts", 0) / max(state.get("cpu_seconds", 0.0), 1e-9),
            "extrapolated_cpu_minutes": {
                str(n): n * state.get("cpu_seconds", 0.0) / max(state.get("cpu_prompts", 0), 1) / 60
                for n in (2000, 5000, 20000, 100000)
            },
            "chunks_per_s": state["chunks"] / state["seconds"],
            "extrapolated_minutes": {str(n): n / rate / 60 for n in (2000, 5000, 20000, 100000)},
        }

    # ---- held-out prompts (no concept) -------------------------------------------------------------

    def heldout(self) -> dict:
        from perfusion_core.prompt_corpus import prompt_corpus

        path = self.work / "heldout.pt"
        if path.exists():
            data = torch.load(path, weights_only=False)
        else:
            self.check_budget(self.s.heldout / 1.5)
            generated = [
                p for p in prompt_corpus(self.s.heldout * 2, seed=1) if p not in self.estimation_prompts
            ]
            generated = generated[: self.s.heldout]
            hand = list(HAND_WRITTEN if self.s.heldout >= 100 else HAND_WRITTEN[:4])
            data = {}
            for name, prompts in (("corpus_seed1", generated), ("hand_written", hand)):
                t0 = time.perf_counter()
                enc, kinds = self.encode(self.clip, prompts)
                data[name] = {"enc": enc, "kinds": kinds, "prompts": len(prompts)}
                self.log(f"held-out {name}: {len(prompts)} prompts in {time.perf_counter() - t0:.0f}s")
            _save(data, path)
        if "superclass_prompts" not in data:  # the superclass word where the concept word would be
            token_id = self.te.word_token_ids(self.clip, SUPERCLASS)[0]
            prompts = [p.format(SUPERCLASS) for p in self.concept_prompts()]
            enc, kinds = self.encode(
                self.clip, prompts, marked=lambda t: isinstance(t, int) and t == token_id
            )
            data["superclass_prompts"] = {"enc": enc, "kinds": kinds, "prompts": len(prompts)}
            _save(data, path)
        self.held = data
        return {name: d["prompts"] for name, d in data.items()}

    # ---- part A: train -----------------------------------------------------------------------------

    def c_inv(self, n: int, ridge: float) -> torch.Tensor:
        from perfusion_core.covariance import invert_covariance

        return invert_covariance(self.snapshots[n], ridge=ridge)

    def pixels(self) -> torch.Tensor:
        from PIL import Image

        folder = self.host.layout.input
        names = write_toy_images(folder, WORD, 3)
        arrays = [np.asarray(Image.open(folder / n).convert("RGB"), dtype=np.float32) / 255 for n in names]
        return torch.from_numpy(np.stack(arrays))

    def train(self, seed: int, per_micro_batch: bool) -> dict:
        name = f"{'micro' if per_micro_batch else 'step'}-s{seed}"
        path = self.work / "runs" / f"{name}.pt"
        if path.exists():
            return torch.load(path, weights_only=False)
        estimate = getattr(self, "_step_s", 10.0) * self.s.steps + 20
        self.check_budget(estimate)
        from perfusion_core.training import TrainingConfig
        from perfusion_core.training_job import TrainingJob

        config = TrainingConfig(
            steps=self.s.steps,
            batch_size=self.s.batch_size,
            grad_accumulation=self.s.grad_accumulation,
            resolution=self.s.resolution,
            seed=seed,
            i_star_per_micro_batch=per_micro_batch,
        )
        drift, stamps = [], []

        def on_step(step, loss, run):
            stamps.append(time.perf_counter())
            i_star, start = run.state.i_star.float().cpu(), run.state.superclass_encoding.float().cpu()
            drift.append(float((i_star - start).norm() / start.norm()))

        t0, cpu0 = time.perf_counter(), time.process_time()
        c_inv = self.c_inv(self.s.train_prompts, self.s.train_ridge)
        job = TrainingJob(WORD, SUPERCLASS, self._pixels, config, c_inv=c_inv)
        result = self.pack.nodes.trainer.train_concept(self.model, self.clip, self.vae, job, on_step=on_step)
        step_s = statistics.median(np.diff(stamps)[1:]) if len(stamps) > 2 else float("nan")
        self._step_s = step_s
        c = result.concept
        run = {
            "name": name,
            "seed": seed,
            "i_star_update": "micro_batch" if per_micro_batch else "step",
            "eval_before": result.eval_before,
            "eval_after": result.eval_after,
            "losses": result.losses,
            "i_star_drift": drift,  # ‖i* − ī_super‖ / ‖ī_super‖ after each step
            "step_s": step_s,
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - cpu0,
            "token_embedding": c.token_embedding,
            "i_star": c.i_star,
            "superclass_encoding": c.superclass_encoding,
        }
        _save(run, path)
        self.log(
            f"trained {name}: objective {result.eval_before:.4f} -> {result.eval_after:.4f}, "
            f"{step_s:.2f} s/step"
        )
        return run

    def concept_prompts(self) -> tuple[str, ...]:
        return CONCEPT_PROMPTS if self.s.heldout >= 100 else CONCEPT_PROMPTS[:4]

    def untrained(self) -> dict:
        """Where every run starts: the superclass embedding as the word, i* = ī_super (step 0)."""
        path = self.work / "runs" / "untrained.pt"
        if path.exists():
            return torch.load(path, weights_only=False)
        from perfusion_core.training import DEFAULT_TEMPLATES

        superclass = self.pack.nodes.trainer.superclass_encoding(self.clip, SUPERCLASS, DEFAULT_TEMPLATES)
        run = {
            "name": "untrained",
            "seed": None,
            "i_star_update": "none",
            "token_embedding": self.te.input_embedding(self.clip, SUPERCLASS),
            "i_star": superclass,
            "superclass_encoding": superclass,
            "i_star_drift": [0.0],
        }
        _save(run, path)
        return run

    def concept_encodings(self, run: dict) -> dict:
        """The learned word in held-out concept prompts and in the training templates."""
        if "concept_enc" in run:
            return run
        from perfusion_core.training import DEFAULT_TEMPLATES

        embedding = run["token_embedding"]
        pclip = self.te.clip_with_concepts(
            self.clip, [self.te.ConceptWord(WORD, self.te.split_embedding(self.clip, embedding))]
        )
        marked = lambda token: token is embedding  # noqa: E731
        prompts = [p.format(WORD) for p in self.concept_prompts()]
        run["concept_enc"] = self.encode(pclip, prompts, marked=marked)
        templates = DEFAULT_TEMPLATES if self.s.heldout >= 100 else DEFAULT_TEMPLATES[:4]
        run["template_enc"] = self.encode(pclip, [t.format(WORD) for t in templates], marked=marked)
        _save(run, self.work / "runs" / f"{run['name']}.pt")
        return run


# ---- metrics --------------------------------------------------------------------------------------


def ratios(enc: torch.Tensor, u: torch.Tensor, i_star: torch.Tensor) -> np.ndarray:
    u, i_star = u.double(), i_star.double()
    return (enc @ u / (i_star @ u)).numpy()


def gates(enc: torch.Tensor, u: torch.Tensor, i_star: torch.Tensor) -> np.ndarray:
    """The gate each encoding gets from the library's own edit at the inference bias and temperature."""
    edit = GatedRank1Edit(i_star, u, INFERENCE_BIAS, INFERENCE_TEMPERATURE)
    return edit.gates(enc)[:, 0].double().numpy()


def by_kind(enc: torch.Tensor, kinds: np.ndarray, u: torch.Tensor, i_star: torch.Tensor) -> dict:
    """r and the gate of the encodings `enc`, summarised per token kind."""
    r, g_all = ratios(enc, u, i_star), gates(enc, u, i_star)
    out = {}
    for k, name in enumerate(KINDS):
        selected = kinds == k
        sel = r[selected]
        if sel.size == 0:
            continue
        g = g_all[selected]
        out[name] = {
            "n": int(sel.size),
            "r_mean": float(sel.mean()),
            "r_max": float(sel.max()),
            "r_min": float(sel.min()),
            "r_p99": float(np.percentile(sel, 99)),
            "gate_mean": float(g.mean()),
            "gate_max": float(g.max()),
            "gate_min": float(g.min()),
            "gate_over_0.1": float((g > 0.1).mean()),
        }
    return out


def rms_r(c: torch.Tensor, u: torch.Tensor, i_star: torch.Tensor) -> float:
    """sqrt(E[r²]) over the encodings whose second moment is c."""
    u = u.double()
    return float(torch.sqrt(u @ c @ u) / (i_star.double() @ u))


def evaluate_concept(study: Study, run: dict, c_inv: torch.Tensor, c_estimate: torch.Tensor | None) -> dict:
    i_star = run["i_star"]
    u = c_inv @ i_star.double()
    out = {}
    out["concept_prompts"] = by_kind(*run["concept_enc"], u, i_star)
    out["training_templates"] = by_kind(*run["template_enc"], u, i_star)
    for name, data in study.held.items():
        out[name] = by_kind(data["enc"], data["kinds"], u, i_star)
    out["rms_r_heldout"] = {}
    for name, data in study.held.items():
        keep = torch.from_numpy(data["kinds"] != KINDS.index("concept"))  # the superclass word is not noise
        held = data["enc"][keep]
        out["rms_r_heldout"][name] = rms_r(held.T @ held / held.shape[0], u, i_star)
    if c_estimate is not None:
        out["rms_r_in_sample"] = rms_r(c_estimate, u, i_star)
    concept = run["template_enc"][0][run["template_enc"][1] == KINDS.index("concept")]
    mean_e = concept.mean(0)
    out["i_star_lag"] = float((i_star.double() - mean_e).norm() / mean_e.norm())  # vs the encodings now
    out["i_star_cos"] = float(torch.nn.functional.cosine_similarity(i_star.double(), mean_e, dim=0))
    return out


def mean_sd(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "values": [float(v) for v in values],
    }


CADENCE_METRICS = {
    "objective before": lambda r, m: r["eval_before"],
    "objective after": lambda r, m: r["eval_after"],
    "objective change": lambda r, m: r["eval_after"] - r["eval_before"],
    "concept r, held-out prompts (mean)": lambda r, m: m["concept_prompts"]["concept"]["r_mean"],
    "concept r, held-out prompts (min)": lambda r, m: m["concept_prompts"]["concept"]["r_min"],
    "concept gate, held-out prompts (mean)": lambda r, m: m["concept_prompts"]["concept"]["gate_mean"],
    "concept gate, held-out prompts (min)": lambda r, m: m["concept_prompts"]["concept"]["gate_min"],
    "concept r, training templates (mean)": lambda r, m: m["training_templates"]["concept"]["r_mean"],
    "other tokens' gate, concept prompts, words after (max)": lambda r, m: m["concept_prompts"][
        "words_after"
    ]["gate_max"],
    "other tokens' gate, concept prompts, end/padding (max)": lambda r, m: max(
        m["concept_prompts"]["end"]["gate_max"], m["concept_prompts"]["padding"]["gate_max"]
    ),
    "other tokens' gate, held-out corpus, words (max)": lambda r, m: m["corpus_seed1"]["words"]["gate_max"],
    "other tokens' gate, hand-written, words (max)": lambda r, m: m["hand_written"]["words"]["gate_max"],
    "superclass word's gate, superclass prompts (mean)": lambda r, m: m["superclass_prompts"]["concept"][
        "gate_mean"
    ],
    "superclass word's gate, superclass prompts (max)": lambda r, m: m["superclass_prompts"]["concept"][
        "gate_max"
    ],
    "word embedding norm": lambda r, m: float(r["token_embedding"].norm()),
    "i* moved from ī_super (‖Δ‖/‖ī‖)": lambda r, m: r["i_star_drift"][-1],
    "i* lag behind the concept encoding (‖i*−ē‖/‖ē‖)": lambda r, m: m["i_star_lag"],
}


def part_a(study: Study, runs: dict, untrained: dict) -> dict:
    c_inv = study.c_inv(study.s.train_prompts, study.s.train_ridge)
    m0 = evaluate_concept(study, untrained, c_inv, None)
    start = {}
    for name, f in CADENCE_METRICS.items():
        try:
            start[name] = float(f(untrained, m0))
        except KeyError:
            start[name] = None
    per_run, table = {}, {}
    for cadence in ("step", "micro_batch"):
        rows = [r for r in runs.values() if r["i_star_update"] == cadence]
        metrics = [evaluate_concept(study, r, c_inv, None) for r in rows]
        for r, m in zip(rows, metrics):
            per_run[r["name"]] = {
                "eval_before": r["eval_before"],
                "eval_after": r["eval_after"],
                "losses": r["losses"],
                "i_star_drift": r["i_star_drift"],
                "step_s": r["step_s"],
                "wall_s": r["wall_s"],
                "cpu_s": r.get("cpu_s"),
                "metrics": m,
            }
        table[cadence] = {
            name: mean_sd([f(r, m) for r, m in zip(rows, metrics)]) for name, f in CADENCE_METRICS.items()
        }
    paired = {}
    for name in CADENCE_METRICS:
        diffs = [
            table["micro_batch"][name]["values"][i] - table["step"][name]["values"][i]
            for i in range(len(table["step"][name]["values"]))
        ]
        paired[name] = mean_sd(diffs)
    return {
        "runs": per_run,
        "untrained": {"metrics": m0, "table": start},
        "by_cadence": table,
        "paired_micro_minus_step": paired,
    }


def part_b(study: Study, runs: dict) -> list[dict]:
    """Every (N, ridge) for the concepts trained with today's cadence: u re-derived, same i*."""
    rows = []
    base = [r for r in runs.values() if r["i_star_update"] == "step"]
    for n in study.s.sizes:
        c = study.snapshots[n]
        for ridge in study.s.ridges:
            c_inv = study.c_inv(n, ridge)
            metrics = [evaluate_concept(study, r, c_inv, c) for r in base]
            row = {"prompts": n, "ridge": ridge, "seeds": [r["seed"] for r in base]}
            row["mean"] = _mean_nested(metrics)
            row["per_seed"] = {  # the headline numbers only: every metric per seed would be megabytes
                "rms_r_heldout": [m["rms_r_heldout"] for m in metrics],
                "rms_r_in_sample": [m["rms_r_in_sample"] for m in metrics],
                "concept_r_mean": [m["concept_prompts"]["concept"]["r_mean"] for m in metrics],
                "concept_gate_mean": [m["concept_prompts"]["concept"]["gate_mean"] for m in metrics],
            }
            rows.append(row)
    return rows


def spectrum(study: Study) -> dict:
    """Eigenvalues of each C relative to its mean diagonal (the unit the ridge is given in)."""
    out = {}
    for n in study.s.sizes:
        c = study.snapshots[n]
        rel = torch.linalg.eigvalsh(c) / (torch.diagonal(c).sum() / c.shape[0])
        out[str(n)] = {
            "smallest": [float(v) for v in rel[:3]],
            "largest": float(rel[-1]),
            "below": {f"{ridge:g}": int((rel < ridge).sum()) for ridge in study.s.ridges},
        }
    return out


def _mean_nested(items: list):
    first = items[0]
    if isinstance(first, dict):
        return {k: _mean_nested([i[k] for i in items]) for k in first if all(k in i for i in items)}
    if isinstance(first, int | float):
        return float(np.mean(items))
    return first


# ---- report ---------------------------------------------------------------------------------------


def table_a(res: dict) -> str:
    a = res["part_a"]
    lines = [
        "| metric (mean ± sd over seeds) | untrained (step 0) | per step (ours) | per micro-batch (reference) "
        "| paired Δ (micro − step) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in CADENCE_METRICS:
        s, m, d = (
            a["by_cadence"]["step"][name],
            a["by_cadence"]["micro_batch"][name],
            a["paired_micro_minus_step"][name],
        )
        zero = a["untrained"]["table"][name]
        zero = "" if zero is None else f"{zero:.4f}"
        lines.append(
            f"| {name} | {zero} | {s['mean']:.4f} ± {s['sd']:.4f} | {m['mean']:.4f} ± {m['sd']:.4f} | "
            f"{d['mean']:+.4f} ± {d['sd']:.4f} |"
        )
    return "\n".join(lines)


def table_b(res: dict, source: str) -> str:
    lines = [
        "| N | ridge | words gate mean / max | words r mean / max | start r | end r max | padding r max "
        "| rms r held-out / in-sample | concept r mean (min) | concept gate mean | superclass-word gate mean / max |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in res["part_b"]:
        m = row["mean"]
        h = m[source]
        c = m["concept_prompts"]["concept"]
        sup = m["superclass_prompts"]["concept"]
        lines.append(
            f"| {row['prompts']} | {row['ridge']:g} | {h['words']['gate_mean']:.4f} / {h['words']['gate_max']:.3f} "
            f"| {h['words']['r_mean']:+.3f} / {h['words']['r_max']:.3f} | {h['start']['r_mean']:+.3f} "
            f"| {h['end']['r_max']:.3f} | {h['padding']['r_max']:.3f} "
            f"| {m['rms_r_heldout'][source]:.3f} / {m.get('rms_r_in_sample', float('nan')):.3f} "
            f"| {c['r_mean']:.3f} ({c['r_min']:.3f}) | {c['gate_mean']:.3f} "
            f"| {sup['gate_mean']:.3f} / {sup['gate_max']:.3f} |"
        )
    return "\n".join(lines)


def report(res: dict) -> str:
    enc = res["encoding"]
    parts = [
        f"encoding: {enc['prompts_per_s']:.2f} prompts/s wall ({enc['prompts_per_cpu_s']:.2f} per CPU-second, "
        f"{enc['chunks_per_s']:.2f} chunks/s) on "
        f"{res['machine']['torch_threads']} thread(s); extrapolated minutes: "
        + ", ".join(f"{n}: {m:.0f}" for n, m in enc["extrapolated_minutes"].items()),
        "",
        "Part A: i* cadence (C from N {train_prompts}, ridge {train_ridge:g})".format(**res["settings"]),
        table_a(res),
        "",
        "Part B: held-out generated prompts (corpus seed 1), mean over seeds",
        table_b(res, "corpus_seed1"),
        "",
        "Part B: hand-written prompts",
        table_b(res, "hand_written"),
    ]
    return "\n".join(parts)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.floating | np.integer):
        obj = obj.item()
    if isinstance(obj, float):
        return float(f"{obj:.6g}") if math.isfinite(obj) else None
    return obj


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one seed, 3 steps (smoke run)")
    parser.add_argument(
        "--budget", type=float, default=0, help="seconds; stop starting work after it (0: none)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    parser.add_argument(
        "--base",
        type=Path,
        default=Path(tempfile.gettempdir()) / "comfyui-perfusion-istar",
        help="host + cache",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else FULL
    study = Study(args, settings)
    try:
        encoding = study.covariance()
        heldout = study.heldout()
        study._pixels = study.pixels()
        untrained = study.concept_encodings(study.untrained())
        runs = {}
        for seed in settings.seeds:
            for per_micro in (False, True):
                run = study.concept_encodings(study.train(seed, per_micro))
                runs[run["name"]] = run
    except OutOfBudget:
        study.log("budget spent: the work so far is cached; run the same command again to go on")
        return 3
    results = {
        "machine": machine(),
        "settings": settings.__dict__,
        "fixture": "tiny random-weight checkpoint (one-level UNet, full-size random CLIP-L): a mechanism "
        "measurement, not a claim about real SD1.5",
        "gate": {"beta": INFERENCE_BIAS, "tau": INFERENCE_TEMPERATURE},
        "encoding": encoding,
        "heldout_prompts": heldout,
        "part_a": part_a(study, runs, untrained),
        "part_b": part_b(study, runs),
        "spectrum": spectrum(study),
        "wall_s_this_invocation": time.monotonic() - study.started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("istar_covariance_quick.json" if args.quick else "istar_covariance.json")
    path.write_text(json.dumps(_jsonable(results), indent=1))
    print(report(results))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
