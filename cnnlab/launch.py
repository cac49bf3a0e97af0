"""The console commands that train: ``cnnlab`` and ``cnnlab-bench``.

Each first restarts its process once with glibc's malloc asking for huge pages where that helps
(:func:`cnnlab.training.allocator.relaunch_with_huge_pages`), before anything heavy is imported.
"""

from __future__ import annotations

import sys

from cnnlab.training.allocator import relaunch_with_huge_pages


def cnnlab() -> None:
    """``cnnlab <overrides>``: the Hydra training app of :mod:`cnnlab.cli`."""
    relaunch_with_huge_pages(sys.argv[1:])
    from cnnlab.cli import main

    main()


def cnnlab_bench() -> None:
    """``cnnlab-bench``: :mod:`cnnlab.bench`."""
    relaunch_with_huge_pages(sys.argv[1:])
    from cnnlab.bench import main

    main()
