"""Keeping torch's thread count when a library changes it (imports torch only when used)."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def torch_threads_kept():
    """Restore torch's intra-op thread count on the way out. Ultralytics' device selection sets it to
    cores - 1 for the whole process (1 on a 2-core machine), which halved every later model step of
    the same run (the demo's embeddings and training came after the antler model)."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
