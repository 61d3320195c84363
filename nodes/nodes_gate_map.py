"""Gate map node: for a prompt, each applied concept's gate on each token. Shows where one concept's
gate opens on another concept's word (the known failure when several are combined) or on ordinary
words, at the bias and temperature the loaders set."""

from __future__ import annotations

from . import model_patch, text_encoder
from .gate_map_image import gate_map_image
from .host_support import require_host


def token_labels(clip, tokens: dict) -> tuple[list[str], list[int]]:
    """(label, position in the encoding) of each token the first encoder reads up to its end token in
    each 77-token window; a concept word's embedding is labelled with the word."""
    encoder = text_encoder.text_encoders(clip)[0]
    inner = getattr(clip.tokenizer, encoder.attribute)
    by_embedding = {
        id(w.embeddings.get(encoder.key)): w.word for w in text_encoder.concept_words(clip).values()
    }
    vocab = getattr(inner, "inv_vocab", {})
    labels, positions, position = [], [], 0
    for window in tokens[encoder.key]:
        for k, pair in enumerate(window):
            token = pair[0]
            if isinstance(token, int):
                label = vocab.get(token, str(token)).replace("</w>", "")
                if token == getattr(inner, "start_token", None):
                    label = "<start>"
                elif token == getattr(inner, "end_token", None):
                    label = "<end>"
            else:
                label = by_embedding.get(id(token), "<embedding>")
            labels.append(label)
            positions.append(position + k)
            if isinstance(token, int) and token == getattr(inner, "end_token", None):
                break
        position += len(window)
    return labels, positions


class PerfusionGateMap:
    DESCRIPTION = (
        "Shows, for a prompt, each applied concept's gate on each token (1 = the token gets the concept, "
        "0 = left alone), at the bias and temperature of the loaders before it. A gate open on another "
        "concept's word, or on the superclass word, is where concepts bleed into each other or into the "
        "prompt: raise that concept's bias, or retrain one of them from another superclass word."
    )
    CATEGORY = "perfusion"
    FUNCTION = "map"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("gate_map", "table")
    OUTPUT_TOOLTIPS = (
        "One row per token, one column per concept; connect a Preview Image.",
        "The same as text: a header line, then one tab-separated line per token (also shown on the node).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The MODEL out of the last Perfusion loader."}),
                "clip": ("CLIP", {"tooltip": "The CLIP out of the last Perfusion loader."}),
                "text": ("STRING", {"multiline": True, "default": "", "tooltip": "The prompt to map."}),
            }
        }

    def map(self, model, clip, text):
        require_host()
        concepts = model_patch.applied_set(model)
        if concepts is None:
            raise ValueError(
                "model: no Perfusion concept is applied; connect the MODEL out of a Perfusion loader"
            )
        tokens = clip.tokenize(text)
        labels, positions = token_labels(clip, tokens)
        cond = clip.encode_from_tokens(tokens).float()
        gates = concepts.gates(cond[0, positions])
        gates = gates.detach().cpu()
        columns = [f"{a.concept.word} ({a.beta:.2f}/{a.tau:.2f})" for a in concepts.applied]
        rows = ["token\t" + "\t".join(a.concept.word for a in concepts.applied)]
        rows += [
            label + "\t" + "\t".join(f"{g:.3f}" for g in row.tolist()) for label, row in zip(labels, gates)
        ]
        table = "\n".join(rows)
        image = gate_map_image(labels, columns, gates, f"gates for: {text}")
        return {"ui": {"text": [table]}, "result": (image, table)}
