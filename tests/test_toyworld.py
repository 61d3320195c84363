"""The toy world: scenes, scorers, the exact VAE and the packed checkpoint as ComfyUI loads it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from toyworld import scorer, world


def all_scenes() -> list[world.Scene]:
    train, held = world.world_scenes()
    concept_scenes = [
        world.Scene(bg, (c.at(pos),))
        for c, bg, pos in itertools.product(world.CONCEPTS.values(), world.BACKGROUNDS, world.POSITIONS)
    ]
    return train + held + concept_scenes


def test_scorer_reads_every_clean_render():
    scenes = all_scenes()
    rows = [scorer.score_scene(scorer.read(world.render(s)), s) for s in scenes]
    assert scorer.accuracy(rows) == {"background": 1.0, "position": 1.0, "colour": 1.0, "all": 1.0}
    for s in scenes:  # every cell of every object
        reading = scorer.read(world.render(s))
        assert {t.position: t.pattern for t in s.things} == reading.objects, s.caption


def test_scorer_reads_noisy_and_shifted_renders():
    """>= 98 % with per-pixel noise of sd 30 (what a sampler leaves), and the training photos
    (objects shifted off the grid by 1 px) still read as their concept."""
    rng = np.random.default_rng(0)
    scenes = all_scenes()
    rows = []
    for s in scenes:
        noisy = np.clip(world.render(s) + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
        rows.append(scorer.score_scene(scorer.read(noisy), s))
    acc = scorer.accuracy(rows)
    assert min(acc["background"], acc["position"], acc["colour"]) >= 0.98, acc
    for concept in world.CONCEPTS.values():
        for photo in world.concept_photos(concept, 6):
            assert scorer.colour_anywhere(scorer.read(photo), concept.colour) == "centre"


def test_scorer_tells_a_concept_from_world_blocks_and_from_a_wrong_scene():
    for concept in world.CONCEPTS.values():
        for colour in world.COLOURS:
            reading = scorer.read(world.render(world.Scene("black", (world.block(colour, "left"),))))
            assert scorer.colour_anywhere(reading, concept.colour) is None
    reading = scorer.read(world.render(world.Scene("black", (world.block("yellow", "left"),))))
    wrong = world.Scene("white", (world.block("red", "right"),))
    assert scorer.score_scene(reading, wrong) == {"background": False, "position": False, "colour": False}


def test_concept_colours_are_never_in_the_world():
    train, held = world.world_scenes()
    for scene in train + held:
        for thing in scene.things:
            assert not set(thing.pattern) & set(world.CONCEPT_COLOURS), scene.caption


def test_scorer_accepts_other_sizes_and_float_images():
    scene = world.Scene("gray", (world.block("purple", "top"), world.block("orange", "bottom")))
    img = world.render(scene)
    big = np.kron(img, np.ones((4, 4, 1), np.uint8))  # 256 px, as the demo shows it
    assert scorer.score_scene(scorer.read(big.astype(np.float32) / 255), scene)["colour"]


def test_held_out_scenes_are_new_combinations_of_seen_values():
    train, held = world.world_scenes()
    assert 0.15 < len(held) / (len(train) + len(held)) < 0.25
    assert not {s.caption for s in train} & {s.caption for s in held}

    def pairs(s):
        t = s.things[0]
        return {(s.background, t.pattern[0]), (s.background, t.position), (t.pattern[0], t.position)}

    seen = set().union(*(pairs(s) for s in train))
    for s in held:
        assert pairs(s) <= seen, s.caption


def test_captions_read_like_the_world():
    scene = world.Scene("cyan", (world.block("orange", "left"), world.CONCEPTS["quib"].at("right")))
    assert scene.caption == "an orange block on the left and a quib on the right, cyan background"


@pytest.fixture(scope="module")
def toyworld_loaded(comfy_host):
    """(MODEL, CLIP, VAE) of the packed toy-world checkpoint through CheckpointLoaderSimple."""
    from toyworld.checkpoint import toyworld_checkpoint

    name = comfy_host.add_checkpoint(toyworld_checkpoint())
    return comfy_host.node_class("CheckpointLoaderSimple")().load_checkpoint(name)[:3]


def test_checkpoint_loads_as_sd15_eps(toyworld_loaded):
    import comfy.model_base
    import comfy.supported_models

    model, clip, vae = toyworld_loaded
    assert type(model.model.model_config) is comfy.supported_models.SD15
    assert model.model.model_type == comfy.model_base.ModelType.EPS


def test_vae_round_trip_is_exact_through_comfyui(toyworld_loaded):
    """Encode -> the latents the UNet was trained on (cell colours in [-1, 1]); decode -> the scene."""
    import torch

    from toyworld import vae as toy_vae

    model, _, vae = toyworld_loaded
    scenes = all_scenes()[::37]
    images = torch.stack([torch.from_numpy(world.render(s)) for s in scenes]).float() / 255
    latent = vae.encode(images)
    seen = model.model.latent_format.process_in(latent)
    assert torch.allclose(seen.float(), toy_vae.latents(images), atol=2e-3)
    decoded = vae.decode(latent).float()
    assert (decoded - images).abs().max().item() < 2 / 255
