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
    assert scorer.accuracy(rows) == {
        "background": 1.0,
        "position": 1.0,
        "colour": 1.0,
        "shape": 1.0,
        "all": 1.0,
    }
    for s in scenes[::7]:  # every object, nothing else
        reading = scorer.read(world.render(s))
        assert {t.position: scorer.Seen(t.colour, t.shape) for t in s.things} == reading.objects, s.caption


def test_scorer_reads_noisy_and_shifted_renders():
    """>= 98 % with per-pixel noise of sd 30 (what a sampler leaves), and the training photos
    (objects shifted off the grid by 1 px) still read as their concept."""
    rng = np.random.default_rng(0)
    rows = []
    for s in all_scenes()[::3]:
        noisy = np.clip(world.render(s) + rng.normal(0, 30, world.render(s).shape), 0, 255).astype(np.uint8)
        rows.append(scorer.score_scene(scorer.read(noisy), s))
    acc = scorer.accuracy(rows)
    assert min(acc.values()) >= 0.98, acc
    for concept in world.CONCEPTS.values():
        for (photo, caption), place in zip(world.concept_photos(concept, 6), world.PHOTO_PLACES):
            assert scorer.read(photo).objects == {place: scorer.Seen(concept.colour, concept.shape)}
            assert caption == world.caption("white", **{place: concept.word})


def test_scorer_tells_shapes_colours_and_a_wrong_scene_apart():
    for concept in world.CONCEPTS.values():
        for colour, shape in world.objects():
            reading = scorer.read(world.render(world.Scene("black", (world.thing(colour, shape, "left"),))))
            assert scorer.colour_anywhere(reading, concept.colour) is None
            assert reading.objects["left"] == scorer.Seen(colour, shape)
    reading = scorer.read(world.render(world.Scene("black", (world.thing("yellow", "bar", "left"),))))
    wrong = world.Scene("white", (world.thing("red", "ball", "right"),))
    assert not any(scorer.score_scene(reading, wrong).values())
    same_place = world.Scene("black", (world.thing("yellow", "ball", "left"),))
    assert scorer.score_scene(reading, same_place) == {
        "background": True,
        "position": True,
        "colour": True,
        "shape": False,
    }


def test_concepts_are_new_colours_of_the_worlds_shapes():
    train, held = world.world_scenes()
    assert {c.shape for c in world.CONCEPTS.values()} == set(world.SHAPES)
    for scene in train + held:
        for t in scene.things:
            assert t.colour not in world.CONCEPT_COLOURS, scene.caption
    for c in world.CONCEPTS.values():
        assert c.colour in world.CONCEPT_COLOURS and c.superclass in world.NOUNS
        assert world.NOUNS[c.superclass][1] == c.shape


def test_scorer_accepts_other_sizes_and_float_images():
    scene = world.Scene("gray", (world.thing("blue", "ball", "top"), world.thing("yellow", "bar", "bottom")))
    img = world.render(scene)
    big = np.kron(img, np.ones((8, 8, 1), np.uint8))  # 576 px, as the demo shows it
    assert all(scorer.score_scene(scorer.read(big.astype(np.float32) / 255), scene).values())


def test_held_out_scenes_are_new_combinations_of_seen_values():
    train, held = world.world_scenes()
    assert 0.15 < len(held) / (len(train) + len(held)) < 0.25
    assert not {s.caption for s in train} & {s.caption for s in held}
    assert sum(len(s.things) == 2 for s in held) > 500  # binding is measured on held-out pairs

    def pairs(s):
        t = s.things[0]
        values = (s.background, t.colour, t.shape, t.position)
        return set(itertools.combinations(values, 2))

    seen = set().union(*(pairs(s) for s in train))
    for s in held:
        assert pairs(s) <= seen, s.caption


def test_captions_put_each_place_in_its_own_slot():
    scene = world.Scene("cyan", (world.CONCEPTS["quib"].at("right"), world.thing("yellow", "bar", "left")))
    assert scene.caption == "top empty, left banana, centre empty, right quib, bottom empty, cyan background"
    assert (
        world.caption("white", centre="{}").format("zorp")
        == world.Scene("white", (world.CONCEPTS["zorp"].at("centre"),)).caption
    )
    with pytest.raises(ValueError, match="no such place"):
        world.caption("white", middle="lime")


def test_build_schedule_is_a_cosine_per_cycle_and_the_shipped_default_has_three():
    from toyworld.build import _restarts, lr_factor

    assert _restarts("1400@0.3,1600@0.2") == [(1400, 0.3), (1600, 0.2)]
    assert _restarts("") == []
    cycles = [(1600, 1.0), *_restarts("1400@0.3,1600@0.2")]
    # each cycle warms up to its peak and ends near zero; a later cycle restarts at its own peak
    assert lr_factor(99, cycles) == pytest.approx(1.0)
    assert lr_factor(1599, cycles) < 1e-5
    assert lr_factor(1600, cycles) == pytest.approx(0.3 / 100)
    assert lr_factor(1699, cycles) == pytest.approx(0.3)
    assert lr_factor(3000 + 99, cycles) == pytest.approx(0.2)
    assert lr_factor(4599, cycles) < 1e-5 and lr_factor(4600, cycles) == 0.0
    # adding a cycle leaves the earlier steps' rates as they were: a saved state resumes into it
    two = cycles[:2]
    assert all(lr_factor(k, two) == lr_factor(k, cycles) for k in range(0, 3000, 7))


def test_value_swap_gives_each_slot_its_own_noun_from_another_place():
    """--value-swap: every donor holds the scene's things on its background; the rows moved back
    give each slot of the scene its own noun (and any place word), and some donor moves them."""
    from toyworld.build import value_donors, value_rows

    train, _ = world.world_scenes()
    donors = value_donors(train)
    moved = 0
    for i in range(0, len(train), 97):
        scene = train[i]
        assert any(d == i and pi == tuple(range(5)) for d, pi in donors[i])
        for d, pi in donors[i]:
            donor = train[d]
            assert donor.background == scene.background
            words = ["<start>"] + [w for slot in donor.caption.split(", ")[:5] for w in (*slot.split(), ",")]
            seen = [words[r] for r in value_rows([pi])[0][1:16].tolist()]
            assert seen[1::3] == [w for slot in scene.caption.split(", ")[:5] for w in slot.split()[1:]]
            assert seen[2::3] == [","] * 5
            moved += seen[0::3] != [slot.split()[0] for slot in scene.caption.split(", ")[:5]]
    assert moved > 0


@pytest.mark.parametrize(
    "module, args",
    [
        ("toyworld.evaluate", ["--no-singles"]),
        ("toyworld.evaluate", ["--weights", "other-build.safetensors"]),
        ("benchmarks.quality", ["--weights", "other-build.safetensors", "--part", "pairs"]),
    ],
)
def test_reports_on_another_world_refuse_to_overwrite_the_shipped_results(capsys, module, args):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(module).main(args)
    assert "give --out" in capsys.readouterr().err
    from toyworld.evaluate import Sampling

    assert str(Sampling()) == "KSampler euler/normal, 20 steps, cfg 5.0"  # the README's sampler


def test_place_route_swaps_one_row_of_the_conditional_half_only():
    """The probe's attn2 patch: the key's or the value's context gets the donor row, in the
    conditional half of the batch (cond_or_uncond 0) only, and the other context is untouched."""
    import torch

    from toyworld.place_route import swap_row

    context = torch.zeros(4, 77, 8)  # batch of 2: uncond then cond, 2 samples each
    donor = torch.arange(77 * 8, dtype=torch.float32).view(77, 8)
    extra = {"cond_or_uncond": [1, 0]}
    for key in (True, False):
        n, k, v = swap_row(5, 8, donor, key=key)("n", context, context, extra)
        changed, kept = (k, v) if key else (v, k)
        assert torch.equal(changed[2:, 5], donor[8].expand(2, 8))
        assert changed[:2].abs().sum() == 0 and changed[2:, :5].abs().sum() == 0
        assert kept is context and context.abs().sum() == 0 and n == "n"


def test_additive_edit_shifts_value_rows_of_the_conditional_half_only():
    """The probe's attn2 patch adds each row's shift to the values' context in the conditional half;
    the keys' context and the unconditional half are untouched. Its recolouring keeps the shape."""
    import torch

    from toyworld.additive_edit import add_to_value_rows, recoloured

    context = torch.zeros(4, 77, 8)  # batch of 2: uncond then cond, 2 samples each
    shifts = {5: torch.ones(8), 9: torch.full((8,), 2.0)}
    n, k, v = add_to_value_rows(shifts)("n", context, context, {"cond_or_uncond": [1, 0]})
    assert torch.equal(v[2:, 5], torch.ones(2, 8)) and torch.equal(v[2:, 9], torch.full((2, 8), 2.0))
    assert v[:2].abs().sum() == 0 and v[2:].abs().sum() == 2 * 8 * 3
    assert k is context and context.abs().sum() == 0 and n == "n"
    assert [recoloured(w) for w in ("cherry", "lime", "marble", "lemon")] == [
        "lime",
        "marble",
        "lemon",
        "cherry",
    ]


def test_another_builds_weights_pack_under_their_own_name(tmp_path):
    from toyworld import checkpoint

    other = tmp_path / "other.safetensors"
    other.write_bytes(checkpoint.WEIGHTS.read_bytes()[:-1] + b"x")
    assert checkpoint.toyworld_checkpoint_name(other) != checkpoint.toyworld_checkpoint_name()
    with pytest.raises(FileNotFoundError, match="missing.safetensors is missing: no such file"):
        checkpoint.toyworld_checkpoint(tmp_path, weights=tmp_path / "missing.safetensors")


def test_weights_round_trip_through_8_bit_storage():
    import torch

    from toyworld import storage

    g = torch.Generator().manual_seed(0)
    tensors = {"w": torch.randn(64, 32, 3, 3, generator=g), "b": torch.randn(64, generator=g)}
    back = storage.unpack(storage.pack(tensors))
    assert back["b"].dtype == torch.float16 and torch.equal(back["b"], tensors["b"].half())
    row_max = tensors["w"].abs().amax(dim=(1, 2, 3), keepdim=True)
    error = (back["w"].float() - tensors["w"]).abs()
    assert (error <= row_max / 254 * 1.01 + tensors["w"].abs() / 1000).all()  # half a step, + fp16


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


def test_checkpoint_carries_the_trained_text_attention(toyworld_loaded):
    """ComfyUI loads the text encoder with strict=False: a misnamed key would be dropped silently and
    the UNet would see captions encoded by the untrained layer, or by attention that should be off."""
    from safetensors.torch import load_file

    from toyworld import storage
    from toyworld.checkpoint import TEXT_ROOT, TEXT_SILENCED, WEIGHTS

    _, clip, _ = toyworld_loaded
    trained = storage.unpack(load_file(str(WEIGHTS)))
    loaded = clip.cond_stage_model.clip_l.transformer.state_dict()
    text_keys = [k for k in trained if k.startswith(TEXT_ROOT)]
    # the last layer's q, k, v, out projections and layer_norm1 (weights and biases), and the other
    # 11 layers' layer_norm1 at zero (their attention off)
    assert len(text_keys) == 10 + len(TEXT_SILENCED)
    for key in text_keys:
        assert loaded[key.removeprefix(TEXT_ROOT)].half().equal(trained[key]), key
    for key in TEXT_SILENCED:
        assert not loaded[key.removeprefix(TEXT_ROOT)].any(), key


def test_a_slots_word_reaches_the_trained_layer_free_of_earlier_slots(toyworld_loaded):
    """With the frozen layers' attention off, the right slot's noun enters the trained last layer the
    same whatever the left slot holds (the fixture's random attention moved a word by 20-30 % of its
    norm), and differs with its own noun."""
    import torch

    from toyworld.checkpoint import LAST

    _, clip, _ = toyworld_loaded
    model = clip.cond_stage_model.clip_l
    captured = []
    hook = model.transformer.text_model.encoder.layers[LAST].register_forward_pre_hook(
        lambda _m, args: captured.append(args[0][0].float().clone())
    )
    captions = [
        world.caption("white", left=a, right=b)
        for a, b in [("brick", "lime"), ("lemon", "lime"), ("brick", "crate")]
    ]
    try:
        clip.load_model()
        for text in captions:
            with torch.no_grad():
                model([[t[0] for t in clip.tokenize(text)["l"][0]]])
    finally:
        hook.remove()
    right = 1 + 3 * world.SLOTS.index("right") + 1  # BOS, then "<place> <noun> ," per slot
    base, other_left, other_own = (h[right] for h in captured)
    assert torch.allclose(base, other_left, atol=1e-3 * base.abs().max().item())
    assert (base - other_own).norm() > 0.3 * base.norm()


def test_the_builds_text_head_gives_the_context_comfyui_encodes(toyworld_loaded):
    """The build trains through TextHead, which folds the last layer's silenced MLP into one constant
    vector: with the shipped attention in it, it must give the context CLIPTextEncode gives, or the
    world trains on one text and samples from another."""
    import torch

    from toyworld.build import TextHead
    from toyworld.checkpoint import LAST

    _, clip, _ = toyworld_loaded
    last = clip.cond_stage_model.clip_l.transformer.text_model.encoder.layers[LAST]
    captured = []
    hook = last.register_forward_pre_hook(lambda _m, args: captured.append(args[0].float().clone()))
    try:
        cond = clip.encode_from_tokens(clip.tokenize(world.caption("white", left="brick", right="lime")))
    finally:
        hook.remove()
    head = TextHead(clip)  # starts with its attention off, as a build does: load the trained one
    head.layer.load_state_dict(last.state_dict())
    with torch.no_grad():
        ours = head(captured[0])
    assert ours.shape == cond.shape
    assert torch.allclose(ours, cond.float(), atol=1e-3 * cond.abs().max().item())
    # the fixture's MLP biases are zero, so its constant is too: the fold itself, with one that is not
    layer = head.layer
    with torch.no_grad():
        layer.mlp.fc1.bias.normal_()
        layer.mlp.fc2.bias.normal_()
        x = captured[0] + layer.self_attn(layer.layer_norm1(captured[0]), head.mask, head.attention)
        full = head.norm(x + layer.mlp(layer.layer_norm2(x)))
        assert torch.allclose(head(captured[0]), full, atol=1e-5)
        assert not torch.allclose(full, ours, atol=1e-2)


def test_every_slot_is_three_tokens_as_the_value_swap_and_place_route_read_them(toyworld_loaded):
    """value_rows moves whole slots and place_route finds a noun's row by its token: both rest on
    each caption being the start token, then "<place> <noun> ," per slot, each word one token."""
    from toyworld.build import SLOT_TOKENS, check_slot_tokens
    from toyworld.place_route import token_index

    _, clip, _ = toyworld_loaded
    train, _ = world.world_scenes()
    for scene in train[:: len(train) // 20]:
        check_slot_tokens(clip, scene.caption)
    caption = world.caption("cyan", top="banana", right="marble")
    assert token_index(clip, caption, "banana") == 1 + SLOT_TOKENS * world.SLOTS.index("top") + 1
    assert token_index(clip, caption, "marble") == 1 + SLOT_TOKENS * world.SLOTS.index("right") + 1
    with pytest.raises(RuntimeError, match="slot 0"):
        check_slot_tokens(clip, caption.replace("top", "top of it", 1))
