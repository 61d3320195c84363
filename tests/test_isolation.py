"""Isolation: a patched model never leaks into the same checkpoint used unpatched, in another prompt or
another branch of one graph; training leaves the base model as it was; unloading and reloading the
models changes no output."""

from __future__ import annotations

import numpy as np

from harness.perfusion_graphs import ConceptUse, add_unpatched_branch, generate_prompt, train_prompt


def run_image(host, prompt, node: str | None = None) -> tuple[np.ndarray, list[str]]:
    result = host.run(prompt).raise_for_error()
    (img,) = host.images(result, node)
    return img, result.executed_nodes


def patched_variants(concepts: dict[str, str]) -> list[list[ConceptUse]]:
    hugsy, zorbo = concepts["hugsy"], concepts["zorbo"]
    return [
        [ConceptUse(hugsy)],
        [ConceptUse(hugsy, bias=0.4, key_lock="global")],
        [ConceptUse(zorbo, bias=0.6)],
        [ConceptUse(hugsy), ConceptUse(zorbo, key_lock="global")],
    ]


def test_interleaved_patched_prompts_leave_unpatched_outputs_unchanged(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    texts = ["a photo of hugsy on the beach", "a photo of a cat"]
    plain = {t: generate_prompt(tiny_ckpt_name, positive=t, seed=3) for t in texts}
    baseline = {t: run_image(comfy_host, p)[0] for t, p in plain.items()}
    checked = 0
    for uses in patched_variants(trained_concepts):
        for text in texts:
            run_image(comfy_host, generate_prompt(tiny_ckpt_name, uses, positive=text, seed=3))
            # the checkpoint's MODEL/CLIP come from the cache (same objects the patch was made from);
            # the sampler runs again
            unpatched, executed = run_image(comfy_host, plain[text])
            sampler, ckpt = plain[text].node("KSampler"), plain[text].node("CheckpointLoaderSimple")
            assert sampler.id in executed and ckpt.id not in executed
            np.testing.assert_array_equal(unpatched, baseline[text])
            checked += 1
    print(f"{checked} unpatched runs interleaved with patched ones: all pixel-equal to the baseline")


def test_unpatched_branch_of_a_patched_graph_is_untouched_in_both_lock_modes(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    text = "a photo of hugsy"
    baseline, _ = run_image(comfy_host, generate_prompt(tiny_ckpt_name, positive=text, seed=5))
    for lock in ("local", "global"):
        uses = [ConceptUse(trained_concepts["hugsy"], key_lock=lock)]
        alone, _ = run_image(comfy_host, generate_prompt(tiny_ckpt_name, uses, positive=text, seed=5))
        prompt = generate_prompt(tiny_ckpt_name, uses, positive=text, seed=5)
        patched = prompt.node("SaveImage")
        # the same checkpoint, unpatched, sampled twice more in the same graph
        branches = [add_unpatched_branch(prompt, text, f"branch{k}") for k in (1, 2)]
        comfy_host.reset_cache()
        result = comfy_host.run(prompt).raise_for_error()
        for branch in branches:
            np.testing.assert_array_equal(comfy_host.images(result, branch.id)[0], baseline)
        np.testing.assert_array_equal(comfy_host.images(result, patched.id)[0], alone)
        print(f"{lock}: both unpatched branches equal the baseline; the patched one equals its lone run")


def test_unloading_and_reloading_models_changes_no_output(comfy_host, tiny_ckpt_name, trained_concepts):
    prompts = [generate_prompt(tiny_ckpt_name, positive="hugsy and zorbo", seed=8)]
    prompts += [
        generate_prompt(tiny_ckpt_name, uses, positive="hugsy and zorbo", seed=8)
        for uses in patched_variants(trained_concepts)
    ]
    before = [run_image(comfy_host, p)[0] for p in prompts]
    for _ in range(2):
        comfy_host.unload_all()
        comfy_host.reset_cache()
        after = [run_image(comfy_host, p)[0] for p in prompts]
        for a, b in zip(before, after, strict=True):
            np.testing.assert_array_equal(a, b)
    print(
        f"{len(prompts)} prompts (1 unpatched, {len(prompts) - 1} patched) identical after 2 unload/reload cycles"
    )


def test_training_leaves_the_base_model_unchanged(comfy_host, tiny_ckpt_name, trained_concepts, toy_images):
    plain = generate_prompt(tiny_ckpt_name, positive="a photo of a teddy", seed=9)
    patched = generate_prompt(
        tiny_ckpt_name, [ConceptUse(trained_concepts["zorbo"])], positive="zorbo", seed=9
    )
    before = [run_image(comfy_host, p)[0] for p in (plain, patched)]
    comfy_host.run(train_prompt(tiny_ckpt_name, toy_images["hugsy"], steps=2, seed=9)).raise_for_error()
    after = [run_image(comfy_host, p)[0] for p in (plain, patched)]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_copy_of_a_patched_model_edits_its_own_weights(
    perfusion_pack, comfy_host, tiny_ckpt_name, trained_concepts
):
    """clone(force_deepcopy=True) (TorchCompileModel, hooks, multi-GPU) rebuilds the model and copies
    the object patches: the edit must call the copy's projections, so that the copy's weights (a LoRA
    patched into them, say) are the ones it edits, not the original's."""
    import sys

    import comfy.utils
    import torch

    from perfusion_core.concept_file import load_concept

    concept = load_concept(comfy_host.base_dir / "models" / "perfusion" / trained_concepts["hugsy"])
    with torch.inference_mode():
        model, clip = sys.modules["nodes"].CheckpointLoaderSimple().load_checkpoint(tiny_ckpt_name)[:2]
        patched, _ = perfusion_pack.nodes.apply.apply_concept(
            model, clip, concept, 0.7, 0.15, "local", "test"
        )
        copy = patched.clone(force_deepcopy=True)
        assert copy.model is not patched.model
        for layer in perfusion_pack.nodes.model_patch.cross_attention_layers(patched):
            path = f"{layer.value_path}.forward"
            projection = comfy.utils.get_attr(copy.model, layer.value_path)
            x = torch.randn(1, 3, layer.context_dim)
            before = copy.get_model_object(path)(x)
            projection.weight.add_(1.0)  # what a weight patch on the copy does when it loads
            assert not torch.allclose(copy.get_model_object(path)(x), before), path
            assert patched.get_model_object(path).prev_forward.__self__ is not projection
