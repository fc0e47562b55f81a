#!/usr/bin/python3
"""Plots pipeline_bench's JSON: operations per second against pipeline depth.

Usage: plot_pipeline.py pipeline.json pipeline.png
(needs Debian's python3-matplotlib)
"""

import json
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        cells = json.load(f)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    connections = sorted({c["connections"] for c in cells})
    fig, axes = plt.subplots(1, len(connections), figsize=(5 * len(connections), 4),
                             squeeze=False, sharey=True)
    styles = {"poold": "-", "poold-stream": ":", "redis": "--"}
    markers = {"store": "o", "read": "s"}
    for ax, conns in zip(axes[0], connections):
        for backend in ("poold", "poold-stream", "redis"):
            for op in ("store", "read"):
                points = sorted(
                    (c["depth"], c["ops"] / c["seconds"])
                    for c in cells
                    if c["backend"] == backend and c["operation"] == op
                    and c["connections"] == conns and c["seconds"] > 0
                    and not c["error"])
                if not points:
                    continue
                ax.plot([p[0] for p in points], [p[1] for p in points],
                        styles[backend], marker=markers[op],
                        label=f"{backend} {op}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("pipeline depth (operations per batch / pipeline)")
        ax.set_title(f"{conns} connection{'s' if conns > 1 else ''}")
        ax.grid(True, which="both", linewidth=0.3)
    axes[0][0].set_ylabel("operations per second")
    axes[0][-1].legend(loc="lower right")
    fig.suptitle("100-byte values: poold (unary at depth 1, Batch above; "
                 "BatchStream) against Redis pipelines")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
