"""The one way this repository builds an API-format prompt (what ``POST /prompt`` takes).

Tests, the harness, the demo, the benchmarks and the shipped workflows (``workflows/build_workflows.py``)
all add nodes through :class:`Graph`, so ids are handed out in one place and no caller counts them:
a caller keeps the :class:`Node` that ``add`` returns, or asks the graph for the node of a class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Graph", "Node"]


@dataclass(frozen=True)
class Node:
    """A node of a :class:`Graph`. ``node[k]`` is the link to its output k; the node itself, given as
    an input, links output 0."""

    id: str

    def __getitem__(self, slot: int) -> list:
        return [self.id, slot]


def _link(value: Any) -> Any:
    return value[0] if isinstance(value, Node) else value


class Graph(dict):
    """An API prompt, node id -> ``{"class_type", "inputs"}``. It is a dict, so it is queued, saved,
    copied and compared as one. New ids count up from the highest numeric id already in it ("1" in an
    empty graph), so a graph loaded from a workflow file grows without clashes. Like any dict, an empty
    graph is falsy: test a graph argument with ``is None``."""

    def add(self, class_type: str, /, **inputs: Any) -> Node:
        """Adds a node; inputs are widget values, links (``node[k]``) or nodes (their output 0)."""
        node = Node(str(max((int(k) for k in self if k.isdigit()), default=0) + 1))
        self[node.id] = {"class_type": class_type, "inputs": {k: _link(v) for k, v in inputs.items()}}
        return node

    def nodes(self, class_type: str) -> list[Node]:
        """The nodes of ``class_type``, in the order they were added."""
        return [Node(k) for k, v in self.items() if v["class_type"] == class_type]

    def node(self, class_type: str) -> Node:
        """The one node of ``class_type`` (an error when there are none or several)."""
        found = self.nodes(class_type)
        if len(found) != 1:
            raise LookupError(f"the graph has {len(found)} {class_type} nodes, not one")
        return found[0]

    def inputs(self, node: Node | str) -> dict:
        """The inputs of ``node`` (a node, or a class the graph has one node of), to read or change."""
        node = node if isinstance(node, Node) else self.node(node)
        return self[node.id]["inputs"]

    # ComfyUI's own nodes, with the inputs tests and workflows vary.

    def checkpoint(self, ckpt_name: str) -> Node:
        """CheckpointLoaderSimple: outputs MODEL, CLIP, VAE."""
        return self.add("CheckpointLoaderSimple", ckpt_name=ckpt_name)

    def encode(self, clip: list, text: str) -> Node:
        return self.add("CLIPTextEncode", text=text, clip=clip)

    def latent(self, width: int, height: int | None = None, batch_size: int = 1) -> Node:
        return self.add("EmptyLatentImage", width=width, height=height or width, batch_size=batch_size)

    def ksampler(
        self,
        model: list,
        positive: Node,
        negative: Node,
        latent: Node,
        *,
        seed: int = 1,
        steps: int = 2,
        cfg: float = 7.0,
        sampler_name: str = "euler",
        scheduler: str = "normal",
        denoise: float = 1.0,
    ) -> Node:
        return self.add(
            "KSampler",
            model=model,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name=sampler_name,
            scheduler=scheduler,
            positive=positive,
            negative=negative,
            latent_image=latent,
            denoise=denoise,
        )

    def sample(
        self, model: list, positive: Node, negative: Node, latent: Node, vae: list, **sampler: Any
    ) -> Node:
        """KSampler (``sampler``: its widgets) -> VAEDecode; returns the decode node (IMAGE)."""
        samples = self.ksampler(model, positive, negative, latent, **sampler)
        return self.add("VAEDecode", samples=samples, vae=vae)

    def save(self, images: Node | list, filename_prefix: str) -> Node:
        return self.add("SaveImage", images=images, filename_prefix=filename_prefix)

    def preview(self, images: Node | list) -> Node:
        return self.add("PreviewImage", images=images)

    def batch(self, images: Sequence[Node | list], *, one_node: bool = False) -> Node | list:
        """One IMAGE batch of ``images`` (same size): Batch Images with a socket per image when
        ``one_node`` (ComfyUI 0.16 and later), else the chain of two-input ImageBatch every host has."""
        if one_node:
            return self.add("BatchImagesNode", **{f"images.image{k}": im for k, im in enumerate(images)})
        batch = images[0]
        for image in images[1:]:
            batch = self.add("ImageBatch", image1=batch, image2=image)
        return batch

    def load_images(self, names: Iterable[str]) -> tuple[Node | list, Node | list]:
        """LoadImage per file, batched: (the IMAGE batch, the MASK batch). Masks are batched through
        images (MaskToImage, ImageBatch, ImageToMask), as no host before 0.16 batches masks."""
        loads = [self.add("LoadImage", image=name) for name in names]
        masks = [self.add("MaskToImage", mask=load[1]) for load in loads[1:]]
        mask: Node | list = loads[0][1]
        if masks:
            first = self.add("MaskToImage", mask=mask)
            mask = self.add("ImageToMask", image=self.batch([first, *masks]), channel="red")
        return self.batch(loads), mask
