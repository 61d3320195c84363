"""What a refactor must not change: trains two small concepts through the real executor on the SD1.5-
and SDXL-shaped fixtures (fixed seeds), exports one, samples with both, and prints a hash of each file
written. Run it before and after a change (the same script in both checkouts) and diff the output:

    .venv/bin/python -m scripts.fingerprint > /tmp/after.txt

The hashes are of the content, not the bytes: a safetensors file's metadata keys come out in a
different order from one process to the next (the writer keeps them in a hash map), and a PNG's
prompt text holds the loader's ``is_changed`` stamp (the file's mtime). So a concept or LoRA file
hashes its sorted metadata and each tensor's dtype, shape and bytes; an image hashes its pixels.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from harness.fixture_checkpoint import fixture_checkpoint
from harness.graph import Graph
from harness.inprocess import ComfyHost
from harness.perfusion_graphs import ConceptUse, generate_prompt, train_prompt
from harness.sample_images import write_toy_images

CONCEPTS = {
    "hugsy": ("teddy", (160, 100, 50), 3),
    "zorbo": ("cat", (40, 120, 200), 4),
}  # superclass, colour, seed


def content_hash(path: Path) -> str:
    """sha256 (16 hex digits) of what a file holds, as the module docstring says."""
    if path.suffix == ".png":
        data = [np.asarray(Image.open(path)).tobytes()]
    else:
        with safe_open(str(path), "pt") as f:
            data = [json.dumps(f.metadata() or {}, sort_keys=True).encode()]
            for key in sorted(f.keys()):
                t = f.get_tensor(key).contiguous()
                raw = t.view(-1).view(torch.uint8).numpy().tobytes()
                data += [key.encode(), str(t.dtype).encode(), str(tuple(t.shape)).encode(), raw]
    return hashlib.sha256(b"|".join(data)).hexdigest()[:16]


def prompts(input_dir: Path) -> dict[str, Graph]:
    """The graphs, in the order they run: per fixture, train both concepts, sample both, export one."""
    images = {
        word: write_toy_images(input_dir, word, 3, colour=colour) for word, (_, colour, _) in CONCEPTS.items()
    }
    out = {}
    for family in ("tiny", "sdxl"):
        ckpt = fixture_checkpoint(family).name
        for word, (superclass, _, seed) in CONCEPTS.items():
            out[f"train {word} {family}"] = train_prompt(
                ckpt, images[word], word=word, superclass=superclass, steps=6, seed=seed,
                lr_v=0.3, lr_embedding=0.02, save_name=f"fp_{family}_{word}",
            )  # fmt: skip
        uses = [
            ConceptUse(f"fp_{family}_hugsy.safetensors", 0.7),
            ConceptUse(f"fp_{family}_zorbo.safetensors", 0.6),
        ]
        out[f"sample {family}"] = generate_prompt(
            ckpt, uses, positive="a photo of hugsy and zorbo", seed=5, steps=3, filename_prefix=f"fp_{family}"
        )
        export = out[f"export {family}"] = Graph()
        model = export.checkpoint(ckpt)[0]
        concept = export.add("PerfusionConceptFile", concept_name=f"fp_{family}_hugsy.safetensors")
        export.add(
            "PerfusionExportConcept", model=model, concept=concept, name=f"fp_{family}_export", overwrite=True
        )
    return out


def main() -> int:
    host = ComfyHost.get(
        tempfile.mkdtemp(prefix="fingerprint-"), checkpoints=["tiny", "sdxl"], load_pack=True
    )
    for name, prompt in prompts(host.base_dir / "input").items():
        result = host.run(prompt)
        if not result.success:
            raise SystemExit(f"{name}: {result.error_text}")
    written = sorted(p for folder in ("models", "output") for p in (host.base_dir / folder).rglob("fp_*"))
    for path in written:
        print(content_hash(path), path.relative_to(host.base_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
