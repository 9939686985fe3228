"""Deterministic, framework-independent weights for parity tests.

The official networks and ours are filled with the same numbers by drawing each tensor, in sorted key
order, from numpy's PCG64 generator. numpy guarantees this stream across versions, so the fixtures only
need to hold inputs and outputs, not whole state dicts.
"""

from __future__ import annotations

import numpy as np
import torch


def perturbed_state_dict(
    reference: dict[str, torch.Tensor], seed: int, scale: float = 0.02
) -> dict[str, torch.Tensor]:
    """Returns a state dict with the keys and shapes of `reference`, filled deterministically.

    Each floating tensor becomes its own value plus `scale` times standard normal noise drawn from
    ``numpy.random.default_rng(seed)`` in sorted key order, so that initial structure (LayerNorm weights
    of one, A_log of log(1..N), D of one) is kept but every parameter is non-trivial. The reference values
    themselves must be deterministic: pass a state dict whose tensors are computed from `seed`-free
    formulas, e.g. from :func:`canonical_state_dict`.

    Args:
        reference: Key -> tensor giving names, shapes and base values.
        seed: Seed of the numpy generator.
        scale: Standard deviation of the noise.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(reference):
        base = reference[key].detach().to(torch.float64).cpu().numpy()
        noise = rng.standard_normal(base.shape)
        out[key] = torch.from_numpy(base + scale * noise).to(reference[key].dtype)
    return out


def canonical_state_dict(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replaces random initial values by deterministic ones that keep each tensor's role.

    Keys ending in ``A_log``/``A_b_log`` become log(1..N) per row, ``D``/``D_b`` and norm weights become
    one, everything else zero. Combined with :func:`perturbed_state_dict` this gives weights that depend
    only on the key names, shapes and the seed.
    """
    out: dict[str, torch.Tensor] = {}
    for key, t in reference.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in ("A_log", "A_b_log"):
            n = t.shape[-1]
            out[key] = torch.log(torch.arange(1, n + 1, dtype=t.dtype)).expand_as(t).clone()
        elif leaf in ("D", "D_b") or (leaf == "weight" and "norm" in key):
            out[key] = torch.ones_like(t)
        else:
            out[key] = torch.zeros_like(t)
    return out
