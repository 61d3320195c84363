"""The loader node through ComfyUI's own prompt executor, on the fixture checkpoint."""

import numpy as np
import pytest

from harness.perfusion_graphs import ConceptUse, add_unpatched_branch, generate_prompt


def image(host, prompt) -> np.ndarray:
    result = host.run(prompt).raise_for_error()
    (img,) = host.images(result)
    return img


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_concept_word_changes_the_image_far_more_than_other_prompts(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    hugsy = ConceptUse(trained_concepts["hugsy"])
    with_word, without_word = "a photo of hugsy on the beach", "a photo of a dog on the beach"
    changed = {}
    for text in (with_word, without_word):
        plain = image(comfy_host, generate_prompt(tiny_ckpt_name, positive=text))
        patched = image(comfy_host, generate_prompt(tiny_ckpt_name, [hugsy], positive=text))
        changed[text] = mean_abs(plain, patched)
    print(f"mean |patched - plain|: with word {changed[with_word]:.5f}, without {changed[without_word]:.5f}")
    assert changed[with_word] > 0.01
    assert changed[with_word] > 10 * changed[without_word]


def test_lower_bias_changes_the_image_more(comfy_host, tiny_ckpt_name, trained_concepts):
    """Lower β opens the gate wider: the image moves further from the gate-closed one (β = 2)."""
    text = "a photo of hugsy"

    def at(bias: float) -> np.ndarray:
        use = ConceptUse(trained_concepts["hugsy"], bias=bias)
        return image(comfy_host, generate_prompt(tiny_ckpt_name, [use], positive=text))

    closed = at(2.0)
    distance = [mean_abs(at(bias), closed) for bias in (0.3, 0.7, 1.1)]
    print("bias 0.3/0.7/1.1 -> mean |image - gate-closed image|:", distance)
    assert distance[0] > distance[1] > distance[2]


def test_two_chained_concepts_run_and_both_act(comfy_host, tiny_ckpt_name, trained_concepts):
    text = "a photo of hugsy sitting next to zorbo"
    both = [ConceptUse(trained_concepts["hugsy"]), ConceptUse(trained_concepts["zorbo"])]
    joint = image(comfy_host, generate_prompt(tiny_ckpt_name, both, positive=text))
    only_hugsy = image(comfy_host, generate_prompt(tiny_ckpt_name, both[:1], positive=text))
    only_zorbo = image(comfy_host, generate_prompt(tiny_ckpt_name, both[1:], positive=text))
    assert mean_abs(joint, only_hugsy) > 1e-3
    assert mean_abs(joint, only_zorbo) > 1e-3


def test_unpatched_model_in_the_same_graph_is_untouched(comfy_host, tiny_ckpt_name, trained_concepts):
    text = "a photo of a dog"
    baseline = image(comfy_host, generate_prompt(tiny_ckpt_name, positive=text, filename_prefix="baseline"))
    prompt = generate_prompt(
        tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"])], positive="a photo of hugsy"
    )
    # A second branch samples the checkpoint's own MODEL and CLIP in the same graph.
    branch = add_unpatched_branch(prompt, text, "branch")
    comfy_host.reset_cache()
    result = comfy_host.run(prompt).raise_for_error()
    (unpatched,) = comfy_host.images(result, node_id=branch.id)
    np.testing.assert_array_equal(unpatched, baseline)


def test_rerunning_a_prompt_gives_an_identical_image(comfy_host, tiny_ckpt_name, trained_concepts):
    uses = [ConceptUse(trained_concepts["hugsy"]), ConceptUse(trained_concepts["zorbo"], key_lock="global")]
    prompt = generate_prompt(tiny_ckpt_name, uses, positive="hugsy and zorbo in a garden")
    first = image(comfy_host, prompt)
    comfy_host.reset_cache()
    np.testing.assert_array_equal(image(comfy_host, prompt), first)


def test_global_key_lock_runs_with_stock_text_encode_and_differs_from_local(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    text = "a photo of hugsy on the beach"
    local = image(
        comfy_host, generate_prompt(tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"])], positive=text)
    )
    use = ConceptUse(trained_concepts["hugsy"], bias=0.5, key_lock="global")
    locked = image(comfy_host, generate_prompt(tiny_ckpt_name, [use], positive=text))
    assert np.isfinite(locked).all()
    assert mean_abs(local, locked) > 1e-3


@pytest.mark.parametrize("bad", ["../escape.safetensors", "missing.safetensors"])
def test_unknown_or_escaping_file_names_fail_validation(comfy_host, tiny_ckpt_name, bad):
    result = comfy_host.run(generate_prompt(tiny_ckpt_name, [ConceptUse(bad)]))
    assert not result.success and result.error_kind == "validation"
    assert "concept_name" in result.error_text


def test_an_edited_concept_file_is_reloaded(comfy_host, tiny_ckpt_name, trained_concepts):
    import os

    prompt = generate_prompt(tiny_ckpt_name, [ConceptUse(trained_concepts["zorbo"])], positive="zorbo")
    loader = prompt.node("PerfusionConceptLoader").id
    comfy_host.run(prompt).raise_for_error()
    assert loader in comfy_host.run(prompt).raise_for_error().cached_nodes
    path = comfy_host.base_dir / "models" / "perfusion" / trained_concepts["zorbo"]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert loader in comfy_host.run(prompt).raise_for_error().executed_nodes


def test_global_key_lock_follows_conditioning_concat_window_by_window(
    comfy_host, perfusion_pack, tiny_ckpt_name, trained_concepts
):
    """ConditioningConcat makes the context two 77-token windows: K reads the superclass prompt in
    the concept's window and the appended window as it is, V the personalised context, and the
    negative prompt (repeated by the host to the positive's length to batch them) its own encoding
    (before: the lock turned off, silently). Watched at every K/V input by an attn2 patch after the
    pack's, through the host's own sampler."""
    import sys

    import torch

    from perfusion_core.concept_file import load_concept

    nodes = sys.modules["nodes"]
    path = comfy_host.base_dir / "models" / "perfusion" / trained_concepts["hugsy"]
    with torch.inference_mode():
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_ckpt_name)[:3]
        pmodel, pclip = perfusion_pack.nodes.apply.apply_concept(
            model, clip, load_concept(path), 0.5, 0.15, "global", "hugsy"
        )

        def encode(c, text: str):
            return nodes.CLIPTextEncode().encode(c, text)[0]

        appended = encode(pclip, "a red car, studio light")
        (positive,) = nodes.ConditioningConcat().concat(
            encode(pclip, "a photo of hugsy on the beach"), appended
        )
        negative = encode(pclip, "blurry")
        superclass = encode(clip, "a photo of teddy on the beach")[0][0][0]
    seen = []

    def watch(n, context, value, extra_options):
        seen.append((list(extra_options["cond_or_uncond"]), context.clone(), value.clone()))
        return n, context, value

    watched = pmodel.clone()
    watched.set_model_attn2_patch(watch)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with torch.inference_mode():
        nodes.common_ksampler(watched, 1, 1, 7.0, "euler", "normal", positive, negative, latent)
    assert seen
    personalised = positive[0][0][0]
    want_key = torch.cat([superclass, appended[0][0][0]])
    for order, key, value in seen:
        assert key.shape == value.shape == (2, 154, 768)
        row = order.index(0)  # the positive prompt's row
        torch.testing.assert_close(key[row], want_key.to(key.dtype), rtol=0, atol=1e-5)
        torch.testing.assert_close(value[row], personalised.to(value.dtype), rtol=0, atol=0)
        torch.testing.assert_close(key[1 - row], negative[0][0][0].repeat(2, 1).to(key.dtype), rtol=0, atol=0)


def test_sampling_progress_inverts_the_hosts_percent_to_sigma(comfy_host, tiny_ckpt_name, perfusion_pack):
    """A schedule counts sampling as ControlNet's start/end percents do: progress(percent_to_sigma(p)) = p."""
    import torch

    model = comfy_host.node_class("CheckpointLoaderSimple")().load_checkpoint(tiny_ckpt_name)[0]
    sampling = model.get_model_object("model_sampling")
    progress = perfusion_pack.nodes.sampling_run.sampling_progress
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        sigma = torch.tensor(min(sampling.percent_to_sigma(p), float(sampling.sigma_max)))
        assert abs(float(progress(sampling, sigma.clamp(min=float(sampling.sigma_min)))) - p) <= 1.5 / 999, p
    assert float(progress(sampling, torch.tensor([0.5, 1e4]))) == 0.0  # a batch counts by its largest sigma


def test_a_linear_bias_schedule_moves_from_bias_to_bias_end(comfy_host, tiny_ckpt_name, trained_concepts):
    """The first model call samples at `bias`; later ones move on towards bias_end, so a schedule's image
    is neither constant bias's; a schedule from a bias to itself is the constant bias, bit for bit."""
    hugsy = trained_concepts["hugsy"]

    def at(steps: int, bias: float, bias_end: float | None = None) -> np.ndarray:
        use = ConceptUse(hugsy, bias=bias, bias_end=bias_end)
        return image(
            comfy_host, generate_prompt(tiny_ckpt_name, [use], positive="a photo of hugsy", steps=steps)
        )

    assert np.array_equal(at(1, 0.3, 1.1), at(1, 0.3))  # one step: sigma_max, progress 0
    scheduled, start, end = at(4, 0.3, 1.1), at(4, 0.3), at(4, 1.1)
    assert mean_abs(scheduled, start) > 1e-3 and mean_abs(scheduled, end) > 1e-3
    assert np.array_equal(at(4, 0.3, 0.3), start)


def test_an_unknown_bias_schedule_is_refused_naming_the_widget(comfy_host, tiny_ckpt_name, trained_concepts):
    prompt = generate_prompt(tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"], bias_end=0.5)])
    prompt.inputs("PerfusionConceptLoader")["bias_schedule"] = "cosine"
    result = comfy_host.run(prompt)
    assert not result.success
    assert "bias_schedule" in str(result.error)
