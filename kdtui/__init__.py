"""kdtui: a terminal experiment manager for knowledge-distillation research.

From Python (a notebook): `kdtui.open_workspace(path)` reads a workspace's runs (kdtui.api).
"""

__all__ = ["open_workspace", "WorkspaceReader"]


def __getattr__(name: str):
    # Loaded on first use, so that `kdtui` commands, which import this package first, pay nothing.
    if name in __all__:
        from kdtui import api

        return getattr(api, name)
    raise AttributeError(f"module 'kdtui' has no attribute {name!r}")
