"""Error types and readable error text shared by the in-process host and the HTTP server client."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "HostError",
    "HostStartError",
    "PromptRejected",
    "ServerStartError",
    "error_from_status",
    "format_error",
]


class HostError(RuntimeError):
    """A prompt failed and the caller asked for an exception (``run(..., check=True)``)."""


class HostStartError(RuntimeError):
    """The in-process host could not start (or a second, different one was requested)."""


def format_error(kind: str | None, error: Mapping | None, node_errors: Mapping | None = None) -> str:
    """Readable text for an execution error / interruption / validation failure (HTTP 400 body)."""
    if not kind:
        return ""
    lines: list[str] = []
    error = dict(error or {})
    if kind == "validation":
        top = error.get("error") or {}
        lines.append(f"validation failed: {top.get('message', '')}")
        if top.get("details"):
            lines.append(f"  {top['details']}")
        node_errors = node_errors if node_errors is not None else error.get("node_errors", {})
    elif kind == "interrupted":
        lines.append(
            f"interrupted at node {error.get('node_id')} ({error.get('node_type')}); "
            f"executed: {sorted(error.get('executed', []), key=str)}"
        )
    else:
        lines.append(
            f"node {error.get('node_id')} ({error.get('node_type')}) raised "
            f"{error.get('exception_type')}: {error.get('exception_message')}"
        )
        tb = error.get("traceback") or []
        if tb:
            lines.append("".join(tb).rstrip())
    for node_id, info in (node_errors or {}).items():
        for reason in info.get("errors", []):
            extra = reason.get("extra_info", {}) or {}
            where = f" [input {extra['input_name']}]" if extra.get("input_name") else ""
            lines.append(
                f"node {node_id} ({info.get('class_type')}){where}: {reason.get('message')}: "
                f"{reason.get('details')}"
            )
    return "\n".join(lines)


class PromptRejected(HostError):
    """``POST /prompt`` answered 400: ``body`` is the server's JSON (``{"error": ..., "node_errors": ...}``)."""

    def __init__(self, body: Mapping):
        self.body = dict(body)
        super().__init__(format_error("validation", self.body))


class ServerStartError(RuntimeError):
    """The ComfyUI server subprocess died or did not answer in time (message holds its log tail)."""


def error_from_status(messages) -> tuple[str | None, dict | None]:
    """``(kind, data)`` from an executor's status messages (``[(event, data), ...]``, as in a history
    entry's ``status.messages``): kind is ``"execution"``, ``"interrupted"`` or None."""
    for event, data in messages:
        if event == "execution_error":
            return "execution", data
        if event == "execution_interrupted":
            return "interrupted", data
    return None, None
