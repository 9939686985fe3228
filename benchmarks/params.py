"""Prints the parameter count of every preset at every scale (the README's model table).

Usage: python benchmarks/params.py
"""

from __future__ import annotations

from sisr.models import PRESETS, create_model


def main() -> None:
    scales = (2, 3, 4)
    print("| preset | " + " | ".join(f"x{s}" for s in scales) + " |")
    print("|---|" + "---:|" * len(scales))
    for name in PRESETS:
        counts = [sum(p.numel() for p in create_model(name, s).parameters()) for s in scales]
        print(f"| {name} | " + " | ".join(f"{n:,}" for n in counts) + " |")


if __name__ == "__main__":
    main()
