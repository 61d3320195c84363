"""Key-locked Perfusion training state and the pieces of the optimisation (docs/method.md §3, §6).

Pure torch: the host layer encodes prompts, runs the denoiser and drives the loop; this module
owns what is trained, how i* follows the concept, and the loss.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .concept import Concept, ConceptInfo
from .concept_set import Projection, ProjectionPlan
from .defaults import TRAIN_BIAS, TRAIN_TEMPERATURE
from .gated_edit import GatedRank1Edit

DEFAULT_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of one training run; defaults are the paper's (docs/method.md §6)."""

    steps: int = 400
    batch_size: int = 4
    grad_accumulation: int = 4
    lr_v: float = 0.03
    lr_embedding: float = 0.006
    # AdamW's decay pulls o*_V toward 0, not toward W_V ī_super where it starts: 0.01 shrinks the
    # targets by ~11 % over 400 steps at lr 0.03 whatever the data say, so training uses none.
    weight_decay: float = 0.0
    beta: float = TRAIN_BIAS
    tau: float = TRAIN_TEMPERATURE
    i_star_momentum: float = 0.99
    # EMA of i* after every micro-batch (as the reference code does; ~25-step window at 4 micro-batches)
    # rather than every optimizer step (~100): measured better, benchmarks/README.md "i* and C".
    i_star_per_micro_batch: bool = True
    # Multiplies the objective. AdamW makes the result independent of it, fp16's range does not: with
    # 1/64 a 64 px run has a 512 px run's per-element gradients (tests of fp16 loss scaling use that).
    loss_weight: float = 1.0
    # False trains with K unedited (the concept word's keys come from its learned embedding): the
    # ablation the paper's key lock is measured against, not a setting for users.
    key_lock: bool = True
    flip_probability: float = 0.5
    resolution: int = 512
    seed: int = 0
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    # One template per training image, from a dataset's captions (caption_template): each image is
    # trained with its own prompt instead of a random one of `templates` (which then lists them).
    image_templates: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, str]:
        return {
            "steps": str(self.steps),
            "batch_size": str(self.batch_size),
            "grad_accumulation": str(self.grad_accumulation),
            "lr_v": str(self.lr_v),
            "lr_embedding": str(self.lr_embedding),
            "weight_decay": str(self.weight_decay),
            "beta": str(self.beta),
            "tau": str(self.tau),
            "i_star_update": "micro_batch" if self.i_star_per_micro_batch else "step",
            "flip_probability": str(self.flip_probability),
            "resolution": str(self.resolution),
            "seed": str(self.seed),
            "templates": str(len(self.templates)),
            "key_lock": "superclass" if self.key_lock else "off",
            **({"captions": str(len(self.image_templates))} if self.image_templates else {}),
            **self.extra,
        }


def parse_templates(text: str) -> tuple[str, ...]:
    """One template per line, each with exactly one `{}` where the concept word goes."""
    templates = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not templates:
        raise ValueError("prompt templates: give at least one line such as 'a photo of a {}'")
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"prompt template '{t}' must contain '{{}}' exactly once (where the word goes)")
    return templates


def caption_template(caption: str, word: str, superclass: str) -> str:
    """A dataset caption as a training template ('{}' where the concept word goes).

    The caption's first concept word becomes '{}' (any later one the superclass word); a caption
    without it gets '{}' in place of its first superclass word ("a teddy on a bench" -> "a {} on a
    bench"), and one with neither is trained as "a photo of a {}, <caption>".
    """
    text = " ".join(caption.split()).replace("{", "(").replace("}", ")")
    for target in (word, superclass):
        pattern = re.compile(rf"(?<![\w-]){re.escape(target)}(?![\w-])", re.IGNORECASE)
        if pattern.search(text):
            first = pattern.sub("{}", text, count=1)
            return re.sub(rf"(?<![\w-]){re.escape(word)}(?![\w-])", superclass, first, flags=re.IGNORECASE)
    return f"a photo of a {{}}, {text}" if text else "a photo of a {}"


def caption_templates(captions: Sequence[str], word: str, superclass: str) -> tuple[str, ...]:
    """Per-image templates for `captions` (see caption_template)."""
    return tuple(caption_template(c, word, superclass) for c in captions)


class ConceptTrainingState(torch.nn.Module):
    """What is optimised (the word embedding, one V target per layer) and what follows (i*).

    Also a PlanSource, so the same projection patch that serves inference serves training,
    gated at the training β and τ.
    """

    def __init__(
        self,
        token_embedding: torch.Tensor,
        superclass_encoding: torch.Tensor,
        v_targets: dict[str, torch.Tensor],
        c_inv: torch.Tensor,
        beta: float,
        tau: float,
        i_star: torch.Tensor | None = None,
        embedding_widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.layer_names = list(v_targets)
        # One parameter per text encoder (SDXL: CLIP-L and bigG), so each is spliced into its own
        # encoder's prompt as a leaf the optimiser updates in place.
        widths = list(embedding_widths or [token_embedding.shape[-1]])
        self.token_embeddings = torch.nn.ParameterList(
            [torch.nn.Parameter(part.detach().float().clone()) for part in token_embedding.split(widths)]
        )
        self.v_targets = torch.nn.ParameterList(
            [torch.nn.Parameter(v_targets[n].detach().float().clone()) for n in self.layer_names]
        )
        # What is not optimised stays on the CPU when the state moves to the training device (plain
        # attributes, not buffers): the edit is folded from them in float64, which MPS lacks, once per
        # step, and then moved. float64 C⁻¹: C of a few thousand prompts is ill-conditioned, and
        # u = C⁻¹ i* cancels large terms.
        self.superclass_encoding = superclass_encoding.detach().to("cpu", torch.float32).clone()
        start = superclass_encoding if i_star is None else i_star
        self.i_star = start.detach().to("cpu", torch.float32).clone()
        self.c_inv = c_inv.detach().to("cpu", torch.float64).clone()
        self.beta, self.tau = beta, tau
        self._edit: GatedRank1Edit | None = None

    @property
    def token_embedding(self) -> torch.Tensor:
        """The word's input embedding across the encoders (the parameter itself with one encoder)."""
        parts = list(self.token_embeddings)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @property
    def u(self) -> torch.Tensor:
        """u = C⁻¹ i*, float32 on the CPU (computed there in float64)."""
        return (self.c_inv @ self.i_star.double()).float()

    def v_target(self, layer: str) -> torch.Tensor:
        return self.v_targets[self.layer_names.index(layer)]

    @torch.no_grad()
    def update_i_star(self, concept_encodings: torch.Tensor, momentum: float) -> None:
        """i* ← m i* + (1 − m) mean(e_concept): no gradient flows into i* (docs/method.md §3)."""
        mean = concept_encodings.detach().float().reshape(-1, self.i_star.shape[0]).mean(0)
        self.i_star.mul_(momentum).add_(mean.cpu(), alpha=1 - momentum)
        self._edit = None

    @contextlib.contextmanager
    def gated_at(self, beta: float, tau: float) -> Iterator[None]:
        """The edits at another gate for a while (previews show the inference gate mid-training)."""
        saved = self.beta, self.tau
        self.beta, self.tau, self._edit = beta, tau, None
        try:
            yield
        finally:
            self.beta, self.tau = saved
            self._edit = None

    def plan(self, layer: str, kind: Projection, device: torch.device) -> ProjectionPlan | None:
        if self._edit is None or self._edit.i_star.device != torch.device(device):
            self._edit = GatedRank1Edit(self.i_star, self.u, self.beta, self.tau).to(device)
            self._key_inputs = self.superclass_encoding[None].to(device)
        if kind == "k":
            return ProjectionPlan(self._edit, self._key_inputs, None)
        return ProjectionPlan(self._edit, None, self.v_target(layer)[None].to(device))

    def optimizer(self, config: TrainingConfig) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            [
                {"params": list(self.token_embeddings), "lr": config.lr_embedding},
                {"params": list(self.v_targets), "lr": config.lr_v},
            ],
            weight_decay=config.weight_decay,
        )

    def to_concept(self, info: ConceptInfo) -> Concept:
        return Concept(
            info=info,
            token_embedding=self.token_embedding.detach().float().cpu().clone(),
            i_star=self.i_star.detach().cpu().clone(),
            u=self.u.detach().cpu().clone(),
            superclass_encoding=self.superclass_encoding.detach().cpu().clone(),
            v_targets={n: self.v_target(n).detach().float().cpu().clone() for n in self.layer_names},
        )

    @classmethod
    def resume(
        cls,
        concept: Concept,
        c_inv: torch.Tensor,
        beta: float,
        tau: float,
        embedding_widths: Sequence[int] | None = None,
    ) -> ConceptTrainingState:
        """Continue training from a saved concept (its embedding, V targets and i*)."""
        return cls(
            concept.token_embedding,
            concept.superclass_encoding,
            concept.v_targets,
            c_inv,
            beta,
            tau,
            i_star=concept.i_star,
            embedding_widths=embedding_widths,
        )


def masked_noise_loss(
    denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Noise-prediction MSE, weighted per pixel by the zero-shot mask (docs/method.md §6).

    The error is taken on the denoised estimate and divided by σ², which equals the ε-prediction
    error for every parameterisation ComfyUI models use (x0 = x_t − σ ε).
    """
    sigma = sigma.reshape(-1, *([1] * (x0.ndim - 1))).float()
    err = ((denoised.float() - x0.float()) / sigma) ** 2
    if mask is None:
        return err.mean()
    weight = mask.float().expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1e-8)


def normalise_mask(mask: torch.Tensor) -> torch.Tensor:
    """Soft mask scaled to max 1 per image; an all-zero mask becomes all ones (no weighting)."""
    peak = mask.flatten(1).amax(1).reshape(-1, *([1] * (mask.ndim - 1)))
    return torch.where(peak > 0, mask / peak.clamp_min(1e-8), torch.ones_like(mask))


def square_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): shorter side to `size`, centre crop."""
    _, _, h, w = images.shape
    scale = size / min(h, w)
    nh, nw = max(size, math.ceil(h * scale)), max(size, math.ceil(w * scale))
    resized = F.interpolate(
        images.float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
    )
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[:, :, top : top + size, left : left + size]


@dataclass(frozen=True)
class BatchPlan:
    """Which image, flip, template and timestep each sample of one micro-batch uses."""

    image_indices: list[int]
    flips: list[bool]
    templates: list[str]
    timesteps: torch.Tensor  # (B,) in [0, 1): fraction of the noise schedule


def plan_batch(
    generator: torch.Generator,
    n_images: int,
    templates: Sequence[str],
    batch_size: int,
    flip_probability: float,
    image_templates: Sequence[str] = (),
) -> BatchPlan:
    """Draws one micro-batch from `generator` (CPU, seeded: the run is reproducible).

    Samples of a batch are distinct while they can be: distinct images (flipped with
    `flip_probability`) while the batch fits the images, distinct (image, flip) pairs while it fits
    those, and only then images drawn with replacement (one photo trains at any batch size). With
    `image_templates` (one per image: captions) each sample takes its image's; else a random template.
    """
    flips_allowed = flip_probability > 0
    pairs = n_images * (2 if flips_allowed else 1)
    if batch_size <= n_images:
        idx = torch.randperm(n_images, generator=generator)[:batch_size].tolist()
        flips = (torch.rand(batch_size, generator=generator) < flip_probability).tolist()
    elif batch_size <= pairs:
        chosen = torch.randperm(pairs, generator=generator)[:batch_size].tolist()
        idx, flips = [c % n_images for c in chosen], [c >= n_images for c in chosen]
    else:
        idx = torch.randint(n_images, (batch_size,), generator=generator).tolist()
        flips = (torch.rand(batch_size, generator=generator) < flip_probability).tolist()
    if image_templates:
        prompts = [image_templates[i] for i in idx]
    else:
        prompts = [
            templates[i] for i in torch.randint(len(templates), (batch_size,), generator=generator).tolist()
        ]
    t = torch.rand(batch_size, generator=generator)
    return BatchPlan(idx, flips, prompts, t)
