#!/usr/bin/python3
"""Plots churn_bench's JSON: RSS and live over time, automatic defragmentation
off and on, one panel each (with the pools' resident bytes and the 1.25 x live
line).

Usage: plot_churn.py churn.json churn.png   (needs Debian's python3-matplotlib)
"""

import json
import sys

MIB = 1 << 20


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        results = json.load(f)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = results["modes"]
    fig, axes = plt.subplots(len(modes), 1, figsize=(9, 3.2 * len(modes)),
                             sharex=True, sharey=True, squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        samples = mode["samples"]
        t = [s["t"] for s in samples]
        live = [s["live"] / MIB for s in samples]
        ax.plot(t, [s["rss"] / MIB for s in samples], label="server RSS")
        ax.plot(t, [(s["rss"] - mode["idle_rss"]) / MIB for s in samples],
                label="RSS - idle RSS", linewidth=0.8)
        ax.plot(t, [s["pools_resident"] / MIB for s in samples],
                label="pools resident", linewidth=0.8)
        ax.plot(t, live, label="live", color="black")
        ax.plot(t, [1.25 * x for x in live], label="1.25 x live",
                color="black", linestyle=":", linewidth=0.8)
        running = [s["t"] for s in samples if s["state"] == 3]
        if running:
            ax.plot(running, [0] * len(running), "|", color="red",
                    markersize=8, label="automatic run in progress")
        phase = results["phase_seconds"]
        k = phase
        while k < t[-1]:
            ax.axvline(k, color="grey", linewidth=0.5)
            k += phase
        ax.set_title("--auto_defrag=%s" % ("true" if mode["mode"] == "on"
                                           else "false"))
        ax.set_ylabel("MiB")
        ax.set_ylim(bottom=-5)
        ax.legend(loc="upper left", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("seconds of churn (grey lines: the size mix shifts)")
    fig.suptitle("churn_bench: %d MiB live, %s" % (results["live_mib"],
                                                  results["machine"]),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
