"""Render one concept at several gate biases on your own ComfyUI, over its HTTP API.

    python workflows/bias_sweep_http.py --server 127.0.0.1:8188 --concept hugsy.safetensors \\
        --biases 0.4,0.5,0.6,0.7,0.8 --out bias_sweep

Loads the shipped ``workflows/api/perfusion_generate.api.json``, sets the concept and the bias, queues
one prompt per bias (same seed), waits for each and saves ``<out>/<concept>_bias<b>.png``. Needs only
the Python standard library; the ComfyUI must have this pack installed and the concept in
models/perfusion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

WORKFLOW = Path(__file__).resolve().parent / "api" / "perfusion_generate.api.json"


class ComfyClient:
    """The three endpoints a queued prompt needs: POST /prompt, GET /history/<id>, GET /view."""

    def __init__(self, server: str, timeout: float):
        self.base = server if server.startswith("http") else f"http://{server}"
        self.timeout = timeout
        self.client_id = f"bias-sweep-{uuid.uuid4().hex[:8]}"

    def _request(self, path: str, payload: dict | None = None) -> bytes:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(
            f"{self.base}{path}", data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{path}: HTTP {e.code}: {e.read().decode(errors='replace')[:2000]}") from e
        except urllib.error.URLError as e:
            raise RuntimeError(f"cannot reach ComfyUI at {self.base}: {e.reason}") from e

    def queue(self, prompt: dict) -> str:
        return json.loads(self._request("/prompt", {"prompt": prompt, "client_id": self.client_id}))[
            "prompt_id"
        ]

    def wait(self, prompt_id: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            entry = json.loads(self._request(f"/history/{prompt_id}")).get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") != "success":
                    raise RuntimeError(f"prompt {prompt_id} failed: {json.dumps(entry['status'])[:2000]}")
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {self.timeout:.0f} s")

    def image(self, item: dict) -> bytes:
        query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request(f"/view?{query}")


def sweep_prompt(template: dict, args: argparse.Namespace, bias: float) -> dict:
    """The shipped one-concept workflow with this run's concept, bias and overrides."""
    prompt = json.loads(json.dumps(template))
    by_class = {node["class_type"]: node["inputs"] for node in prompt.values()}
    by_class["PerfusionConceptLoader"].update(concept_name=args.concept, bias=bias)
    by_class["SaveImage"]["filename_prefix"] = f"bias_sweep/{Path(args.concept).stem}"
    if args.prompt:
        positive_node = by_class["KSampler"]["positive"][0]
        prompt[positive_node]["inputs"]["text"] = args.prompt
    for option, node, name in (
        ("ckpt", "CheckpointLoaderSimple", "ckpt_name"),
        ("seed", "KSampler", "seed"),
        ("steps", "KSampler", "steps"),
        ("size", "EmptyLatentImage", "width"),
        ("size", "EmptyLatentImage", "height"),
    ):
        if getattr(args, option) is not None:
            by_class[node][name] = getattr(args, option)
    return prompt


def parse_biases(text: str) -> list[float]:
    try:
        biases = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--biases '{text}': use numbers separated by commas") from None
    if not biases or any(not -1.0 <= b <= 2.0 for b in biases):
        raise argparse.ArgumentTypeError(f"--biases '{text}': give one or more values in [-1, 2]")
    return biases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:8188", help="host:port of your ComfyUI")
    parser.add_argument("--concept", required=True, help="a file in models/perfusion, e.g. hugsy.safetensors")
    parser.add_argument("--biases", type=parse_biases, default=parse_biases("0.4,0.5,0.6,0.7,0.8"))
    parser.add_argument("--out", type=Path, default=Path("bias_sweep"), help="folder for the PNGs")
    parser.add_argument("--prompt", help="positive prompt (write the concept's word in it)")
    parser.add_argument("--ckpt", help="checkpoint file (default: the workflow's SD1.5)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--size", type=int, help="width and height in pixels")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each image")
    args = parser.parse_args(argv)

    template = json.loads(WORKFLOW.read_text())
    client = ComfyClient(args.server, args.timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    for bias in args.biases:
        entry = client.wait(client.queue(sweep_prompt(template, args, bias)))
        images = [item for out in entry["outputs"].values() for item in out.get("images", [])]
        if not images:
            raise RuntimeError(f"bias {bias}: the prompt finished without an image")
        path = args.out / f"{Path(args.concept).stem}_bias{bias:.2f}.png"
        path.write_bytes(client.image(images[0]))
        print(f"bias {bias:.2f} -> {path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
