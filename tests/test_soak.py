"""Soak: 500+ prompts queued at once through ComfyUI's real server over HTTP.

Concepts, biases, lock modes and plain prompts alternate; some prompts repeat back to back (served by
the cache), others get fresh seeds (computed anew). No prompt fails, every output of a representative
prompt equals that prompt run alone after ``/free``, and the server's resident memory stays flat.
"""

from __future__ import annotations

import copy
import random
import shutil
import time

import numpy as np
import pytest
import requests

from harness.faults import rss_bytes
from harness.graph import Graph
from harness.perfusion_graphs import ConceptUse, generate_prompt

N_PROMPTS = 520
RSS_GROWTH_LIMIT = 0.05


def representative_prompts(ckpt: str, concepts: dict[str, str]) -> list[Graph]:
    """24 distinct prompts: plain, one concept (both lock modes, several biases), two concepts."""
    hugsy, zorbo = concepts["hugsy"], concepts["zorbo"]
    chains = [
        [],
        [ConceptUse(hugsy)],
        [ConceptUse(hugsy, bias=0.5, key_lock="global")],
        [ConceptUse(hugsy, bias=0.9)],
        [ConceptUse(zorbo, bias=0.6)],
        [ConceptUse(zorbo, bias=0.45, key_lock="global")],
        [ConceptUse(hugsy), ConceptUse(zorbo, key_lock="global")],
        [ConceptUse(zorbo, bias=0.8), ConceptUse(hugsy, bias=0.6)],
    ]
    texts = ["a photo of hugsy on the beach", "zorbo sitting next to hugsy", "a photo of a dog"]
    return [
        generate_prompt(ckpt, chain, positive=text, seed=1 + i % 2, steps=1, filename_prefix=f"soak{i}")
        for i, (chain, text) in enumerate((c, t) for c in chains for t in texts)
    ]


def soak_sequence(specs: list[Graph], n: int, seed: int = 0) -> tuple[list[Graph], list[int | None]]:
    """n prompts: runs of 1-12 identical representative prompts (index kept; repeats are served by the
    cache) and one-off prompts with a fresh seed (index None; computed anew)."""
    rng = random.Random(seed)
    prompts: list[Graph] = []
    index: list[int | None] = []
    order = rng.sample(range(len(specs)), len(specs))  # every representative prompt takes part
    while len(prompts) < n:
        if rng.random() < 0.1:
            one_off = copy.deepcopy(rng.choice(specs))
            one_off.inputs("KSampler")["seed"] = 1000 + len(prompts)
            prompts.append(one_off)
            index.append(None)
            continue
        i = order.pop() if order else rng.randrange(len(specs))
        for _ in range(rng.randint(1, 12)):
            prompts.append(specs[i])
            index.append(i)
    return prompts, index


@pytest.mark.slow
def test_soak_hundreds_of_queued_prompts(comfy_server, comfy_host, tiny_ckpt_name, trained_concepts):
    srv = comfy_server
    srv.layout.perfusion.mkdir(parents=True, exist_ok=True)
    for name in trained_concepts.values():
        shutil.copy(
            comfy_host.base_dir / "models" / "perfusion" / name, srv.base_dir / "models" / "perfusion"
        )
    specs = representative_prompts(tiny_ckpt_name, trained_concepts)
    warm = srv.run_many(specs)  # warm-up: every model, every concept, the caches
    assert all(r.success for r in warm), [r.error_text for r in warm if not r.success]
    rss_before = rss_bytes(srv.pid)

    prompts, index = soak_sequence(specs, N_PROMPTS)
    t0 = time.perf_counter()
    try:
        results = srv.run_many(prompts, timeout=1800)  # ~3 min on an idle 2-core CPU
    finally:  # on a timeout, leave no queued prompts behind for the next test on this server
        requests.post(f"{srv.url}/queue", json={"clear": True}, timeout=30)
        srv.interrupt()
    soak_s = time.perf_counter() - t0
    rss_after = rss_bytes(srv.pid)
    failed = [r.error_text for r in results if not r.success]
    assert not failed, failed[:3]
    cached = sum(1 for r in results if not [e for e in r.events("executing") if e.get("node")])

    alone = []
    for spec in specs:  # each one alone, on a server that dropped its models and node cache
        srv.free(unload_models=True, free_memory=True)
        time.sleep(0.3)
        alone.append(srv.images(srv.run(spec, check=True))[0])
    compared = 0
    for result, i in zip(results, index, strict=True):
        if i is None:
            continue
        (img,) = srv.images(result)
        np.testing.assert_array_equal(img, alone[i], err_msg=f"soak output of representative prompt {i}")
        compared += 1
    growth = (rss_after - rss_before) / rss_before
    print(
        f"\nsoaked {len(results)} prompts in {soak_s:.1f}s ({len(results) / soak_s:.1f}/s); "
        f"{cached} served entirely from the cache; {compared} outputs of {len(specs)} representative prompts "
        f"pixel-equal to their lone runs; server RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB "
        f"({100 * growth:+.2f} %)"
    )
    assert len(results) >= 500 and len(specs) >= 20
    assert growth < RSS_GROWTH_LIMIT
