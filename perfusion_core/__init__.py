"""Perfusion math and file format: pure torch, no ComfyUI imports."""
