"""Benchmarks of comfyui-perfusion against ComfyUI's own peers (LoRA, textual inversion); see README.md."""
