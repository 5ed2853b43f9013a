"""One place that seeds every random number generator fermetric touches."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Args:
        seed: any integer; reduced modulo 2**32 for NumPy.
        deterministic: also ask cuDNN for deterministic kernels (CPU results are
            deterministic regardless).

    Returns:
        The seed, for logging.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator seeded with `seed`: pass it to sampling code instead of using global state."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) % (2**63))
    return g
