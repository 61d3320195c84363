"""ConceptSet's warnings about concepts that cannot be told apart when applied together."""

from __future__ import annotations

import dataclasses
import logging
import sys

import pytest
from hostile_files import make_sd15_concept

from perfusion_core import concept_set
from perfusion_core.concept_set import AppliedConcept, ConceptSet

ADVICE = (
    "train one of them from another superclass word, and set key_lock to global for both (each word "
    "then keys from its own place in the prompt)"
)


def applied(seed: int, word: str, superclass: str, key_lock: str = "local") -> AppliedConcept:
    """As nodes/apply.py builds it from the node's key_lock input."""
    return AppliedConcept(
        make_sd15_concept(seed, word=word, superclass=superclass),
        beta=0.7,
        tau=0.15,
        global_lock=key_lock == "global",
        key_edit=key_lock != "off",
    )


def key_records(caplog) -> list[str]:
    """The identical-key warnings among what was logged (crosstalk warnings are another matter)."""
    return [r.getMessage() for r in caplog.records if "identical keys" in r.getMessage()]


def build(caplog, concepts, new_from: int = 0) -> tuple[ConceptSet, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
        built = ConceptSet(tuple(concepts), new_from=new_from)
    return built, key_records(caplog)


def test_two_local_concepts_of_one_superclass_warn_once_naming_both_and_the_superclass(caplog):
    _, (message,) = build(caplog, [applied(0, "hugsy", "teddy"), applied(1, "zorbo", "teddy")])
    assert "'hugsy'" in message and "'zorbo'" in message and "'teddy'" in message
    assert "identical keys under the local key lock" in message
    assert "one image mixes them" in message
    assert ADVICE in message


def test_the_superclass_word_is_compared_as_the_tokenizer_reads_it(caplog):
    _, messages = build(caplog, [applied(0, "hugsy", "teddy"), applied(1, "zorbo", " Teddy")])
    assert len(messages) == 1


def test_different_superclasses_do_not_warn(caplog):
    _, messages = build(caplog, [applied(0, "hugsy", "teddy"), applied(1, "zorbo", "cat")])
    assert messages == []
    _, messages = build(caplog, [applied(0, "hugsy", "teddy"), applied(1, "zorbo", "teddy")])
    assert len(messages) == 1  # the control: the same pair with one superclass does warn


def test_coinciding_superclass_encodings_warn_even_when_the_words_differ(caplog):
    hugsy = applied(0, "hugsy", "teddy")
    zorbo = applied(1, "zorbo", "bear")
    zorbo = dataclasses.replace(
        zorbo,
        concept=dataclasses.replace(
            zorbo.concept, superclass_encoding=hugsy.concept.superclass_encoding * 1.5 + 1e-6
        ),
    )
    _, (message,) = build(caplog, [hugsy, zorbo])
    assert "'hugsy'" in message and "'zorbo'" in message
    assert "'teddy'" in message and "'bear'" in message
    assert ADVICE in message


@pytest.mark.parametrize(
    "locks", [("global", "global"), ("global", "local"), ("local", "off"), ("off", "off")]
)
def test_no_warning_unless_both_keys_are_locked_locally(caplog, locks):
    """Global lock: each word keys from the superclass in its own place in the prompt; off: K unedited."""
    pair = [applied(0, "hugsy", "teddy", locks[0]), applied(1, "zorbo", "teddy", locks[1])]
    _, messages = build(caplog, pair)
    assert messages == []
    _, messages = build(caplog, [applied(0, "hugsy", "teddy"), applied(1, "zorbo", "teddy")])
    assert len(messages) == 1  # the control: both locked locally


def test_chaining_does_not_repeat_a_warning(caplog):
    first, messages = build(caplog, [applied(0, "hugsy", "teddy"), applied(1, "zorbo", "teddy")])
    assert len(messages) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
        second = first.extended((applied(2, "blorp", "cat"),))
    assert key_records(caplog) == []  # hugsy/zorbo was warned about when zorbo was applied
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
        second.extended((applied(3, "quib", "teddy"),))
    (message,) = key_records(caplog)  # one line for the group hugsy, zorbo and quib
    assert "'hugsy', 'zorbo' and 'quib' share the superclass 'teddy'" in message


def test_the_pure_function_reports_only_groups_with_a_new_concept():
    identical_key_warnings = concept_set.identical_key_warnings
    concepts = (applied(0, "hugsy", "teddy"), applied(1, "zorbo", "teddy"), applied(2, "quib", "teddy"))
    assert len(identical_key_warnings(concepts)) == 1
    (message,) = identical_key_warnings(concepts[:2])
    assert identical_key_warnings(concepts[:2], new_from=2) == []
    assert len(identical_key_warnings(concepts, new_from=2)) == 1
    assert message.index("'hugsy'") < message.index("'zorbo'")  # the earlier concept first


def test_many_concepts_of_one_superclass_warn_in_one_line_per_superclass():
    """Sixteen teddies and two cats, interleaved, with a globally locked teddy among them: one line
    for the teddies (not 120 pairs), one for the cats, and the global one named in neither."""
    words = [f"teddy{k}" for k in range(16)]
    concepts = [applied(k, w, "teddy") for k, w in enumerate(words)]
    concepts[3:3] = [applied(20, "kit", "cat")]
    concepts[9:9] = [applied(21, "tom", "cat"), applied(22, "loner", "teddy", "global")]
    messages = concept_set.identical_key_warnings(tuple(concepts))
    assert len(messages) == 2
    teddies, cats = messages
    assert all(f"'{w}'" in teddies for w in words) and "share the superclass 'teddy'" in teddies
    assert "'kit' and 'tom' share the superclass 'cat'" in cats
    assert "loner" not in teddies + cats


def test_chained_apply_nodes_on_the_fixture_warn_once_per_group(
    comfy_host, perfusion_pack, tiny_ckpt_name, caplog
):
    """Through PerfusionApplyConcept, chained as in a graph: the second node's patch rebuilds the set
    from the first's concepts (model_patch.apply_concepts), and only groups with a new concept are warned about."""
    import torch

    from perfusion_core.concept import Concept, ConceptInfo

    nodes = sys.modules["nodes"]
    pack = perfusion_pack.nodes
    with torch.inference_mode():
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_ckpt_name)[:3]
    signature = pack.apply.model_signature(model, clip)

    def concept(seed: int, word: str, superclass: str) -> Concept:
        g = torch.Generator().manual_seed(seed)
        d = signature.encoder_width
        i_star = torch.randn(d, generator=g)
        info = ConceptInfo(
            word=word,
            superclass=superclass,
            model_family=signature.model_family,
            encoder_fingerprint=signature.encoder_fingerprint,
            text_encoders=signature.text_encoders,
        )
        return Concept(
            info=info,
            token_embedding=pack.text_encoder.input_embedding(clip, superclass),
            i_star=i_star,
            u=i_star * 1e-2,
            superclass_encoding=torch.randn(d, generator=g),
            v_targets={name: torch.randn(w, generator=g) for name, w in signature.layers.items()},
        )

    node = perfusion_pack.NODE_CLASS_MAPPINGS["PerfusionApplyConcept"]()
    chain = [("hugsy", "teddy", "local"), ("zorbo", "teddy", "local"), ("blorp", "teddy", "global")]
    warned = []
    for seed, (word, superclass, key_lock) in enumerate(chain):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
            model, clip = node.apply(model, clip, concept(seed, word, superclass), 0.7, 0.15, key_lock)
        warned.append(key_records(caplog))
    assert warned[0] == [] and warned[2] == []  # one concept; then a globally locked one
    (message,) = warned[1]
    assert "'hugsy' and 'zorbo' share the superclass 'teddy'" in message and ADVICE in message


def test_concepts_whose_gates_read_each_other_warn_in_one_line_per_group():
    """Crosstalk (a gate opening on another concept's i*) groups as the identical keys do: three
    twins of one i* and two of another give two lines, and a concept apart is in neither."""
    crosstalk_warnings = concept_set.crosstalk_warnings

    def twins(seed: int, words: list[str]) -> list[AppliedConcept]:
        first = make_sd15_concept(seed, word=words[0])
        same = [
            dataclasses.replace(make_sd15_concept(seed + k, word=w), i_star=first.i_star, u=first.u)
            for k, w in enumerate(words[1:], start=1)
        ]
        return [AppliedConcept(c, 0.7, 0.15) for c in (first, *same)]

    hugsy = twins(0, ["hugsy", "zorbo", "quib"])
    kit = twins(10, ["kit", "tom"])
    apart = AppliedConcept(make_sd15_concept(20, word="loner"), 0.7, 0.15)
    concepts = (hugsy[0], kit[0], apart, hugsy[1], kit[1], hugsy[2])
    first, second = crosstalk_warnings(concepts)
    assert "'hugsy', 'zorbo' and 'quib' have nearly the same target input" in first
    assert "'kit' and 'tom' have nearly the same" in second
    assert "loner" not in first + second
    assert crosstalk_warnings(concepts, new_from=5) == [first]  # only quib is new
    assert crosstalk_warnings(concepts[:3]) == []
