"""Test configuration: the host fixtures, and concepts trained once per session through the real
executor. (`perfusion_core`, `harness` import top-level: pyproject.toml puts the repo root on pytest's
pythonpath.)"""

import sys

import pytest

pytest_plugins = ["harness.pytest_fixtures"]

CONCEPTS = {  # file -> (word, superclass, image colour)
    "test_hugsy.safetensors": ("hugsy", "teddy", (160, 100, 50)),
    "test_zorbo.safetensors": ("zorbo", "cat", (40, 120, 200)),
}


@pytest.fixture(scope="session")
def perfusion_pack(comfy_host):
    """The pack as ComfyUI imported it (for tests that call its functions inside the host).

    ComfyUI registers a package under its folder's path, e.g. ".../custom_nodes/comfyui-perfusion".
    """
    from harness.basedir import PACK_DIR_NAME

    for name, module in list(sys.modules.items()):
        if name.endswith(PACK_DIR_NAME) and hasattr(module, "NODE_CLASS_MAPPINGS"):
            return module
    raise LookupError("the pack was not imported by the host")


@pytest.fixture(scope="session")
def toy_images(comfy_host) -> dict[str, list[str]]:
    from harness.sample_images import write_toy_images

    folder = comfy_host.base_dir / "input"
    return {word: write_toy_images(folder, word, 3, colour=colour) for word, _, colour in CONCEPTS.values()}


def train_test_concepts(
    host, ckpt_name: str, toy_images, prefix: str, steps: int, **settings
) -> dict[str, str]:
    """Both test concepts trained apart through the executor and saved as `<prefix><word>`: word -> file."""
    from harness.perfusion_graphs import train_prompt

    out = {}
    for word, superclass, _ in CONCEPTS.values():
        prompt = train_prompt(
            ckpt_name,
            toy_images[word],
            word=word,
            superclass=superclass,
            steps=steps,
            lr_v=0.3,
            lr_embedding=0.02,
            save_name=f"{prefix}{word}",
            **settings,
        )
        host.run(prompt).raise_for_error()
        out[word] = f"{prefix}{word}.safetensors"
    return out


@pytest.fixture(scope="session")
def trained_concepts(comfy_host, tiny_ckpt_name, toy_images) -> dict[str, str]:
    """Two concepts trained apart (8 steps each) and saved to models/perfusion: word -> file name."""
    return train_test_concepts(comfy_host, tiny_ckpt_name, toy_images, "test_", steps=8)


@pytest.fixture(scope="session")
def toy_pixels(toy_images, comfy_host):
    """The hugsy toy images as an IMAGE batch (N, H, W, 3), as LoadImage + ImageBatch give them."""
    import numpy as np
    import torch
    from PIL import Image

    folder = comfy_host.base_dir / "input"
    arrays = [
        np.asarray(Image.open(folder / n).convert("RGB"), dtype=np.float32) / 255 for n in toy_images["hugsy"]
    ]
    return torch.from_numpy(np.stack(arrays))
