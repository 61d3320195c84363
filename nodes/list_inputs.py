"""Inputs of INPUT_IS_LIST nodes: every input arrives as a list (the host's dataset nodes send lists of
images), and only some of them may hold more than one value."""

from __future__ import annotations


def one_each(inputs: dict[str, list], listed: str) -> dict:
    """Each input's single value, refusing a list of several for an input that takes one (`listed`:
    the inputs that do take lists, for the message)."""
    single = {}
    for name, values in inputs.items():
        if len(values) != 1:
            raise ValueError(f"{name}: got {len(values)} values; only {listed} take a list")
        single[name] = values[0]
    return single
