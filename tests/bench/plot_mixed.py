#!/usr/bin/python3
"""Plots mixed_bench's JSON: (RSS - idle RSS) / live per backend and size.

Usage: plot_mixed.py mixed.json mixed.png   (needs Debian's python3-matplotlib)
"""

import json
import sys

LABELS = {
    "poold": "poold after TriggerDefragmentation",
    "glibc": "glibc + malloc_trim",
    "jemalloc": "jemalloc + purge",
    "redis": "Redis 7 + MEMORY PURGE",
}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        results = json.load(f)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted({r["live_mib"] for r in results})
    backends = [b for b in LABELS if any(r["backend"] == b for r in results)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        values = []
        for size in sizes:
            match = [r for r in results
                     if r["backend"] == backend and r["live_mib"] == size]
            values.append(match[0]["ratio"] if match else 0)
        xs = [k + (i - (len(backends) - 1) / 2) * width for k in range(len(sizes))]
        ax.bar(xs, values, width, label=LABELS[backend])
    ax.axhline(1.10, color="black", linestyle="--", linewidth=0.8,
               label="target 1.10 (64 MiB and up)")
    ax.axhline(1.20, color="grey", linestyle=":", linewidth=0.8,
               label="target 1.20 (16 MiB)")
    ax.set_xticks(range(len(sizes)), [f"{s} MiB" for s in sizes])
    ax.set_ylim(0.9, max(r["ratio"] for r in results) * 1.05)
    ax.set_ylabel("(RSS - idle RSS) / live bytes")
    ax.set_title("Whole process after cleanup, mixed sizes (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
