#!/usr/bin/python3
"""Runs the RAMCloud fragmentation workloads W1..W8 against poold's engine,
glibc malloc and jemalloc (each in its own process, same operation sequence)
and prints a Markdown table of resident/live; writes the raw results as JSON
and, with --plot, a PNG.

  tests/bench/run_fragmentation.py --build build [--scale 1.0] \
      [--json out.json] [--plot out.png]
"""
import argparse
import json
import os
import subprocess
import sys

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"]


def run(binary, workload, allocator, env_extra, scale):
    env = dict(os.environ)
    env.update(env_extra)
    cmd = [
        binary,
        f"--workload={workload}",
        f"--allocator={allocator}",
        f"--allocated_mib={int(2048 * scale)}",
        f"--live_mib={int(400 * scale)}",
    ]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def metadata(engine):
    """Metadata bytes of the three pools after the defragmentation."""
    return sum(engine[p]["metadata"] for p in ("small", "medium", "large"))


def ratio(x, live):
    return x / live if live else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default="build")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="1.0 = 2 GiB allocated per phase, 400 MiB live")
    parser.add_argument("--json")
    parser.add_argument("--plot")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args()
    binary = os.path.join(args.build, "tests/bench/frag_bench")
    rows = []
    for w in args.workloads.split(","):
        engine = run(binary, w, "engine", {}, args.scale)
        glibc = run(binary, w, "malloc", {}, args.scale)
        jemalloc = (run(binary, w, "malloc", {"LD_PRELOAD": JEMALLOC}, args.scale)
                    if os.path.exists(JEMALLOC) else None)
        rows.append({"engine": engine, "glibc": glibc, "jemalloc": jemalloc})
        print(f"{w} done", file=sys.stderr)

    print("| W | live | glibc | glibc + trim | jemalloc | poold before defrag |"
          " poold after defrag | defrag time | bytes moved | longest slice |"
          " metadata per block |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    misses = []
    for r in rows:
        e, g, j = r["engine"], r["glibc"], r["jemalloc"]
        live = e["live_bytes"]
        after = ratio(e["rss_after_defrag"], live)
        jr = ratio(j["rss"], j["live_bytes"]) if j else float("nan")
        gr = ratio(g["rss"], g["live_bytes"])
        gt = ratio(g["rss_after_trim"], g["live_bytes"])
        print(f"| {e['workload']} | {live / 2**20:.0f} MiB | {gr:.2f} | {gt:.2f} |"
              f" {jr:.2f} | {ratio(e['rss'], live):.2f} | **{after:.2f}** |"
              f" {e['defrag_ms']:.0f} ms | {e['bytes_moved'] / 2**20:.1f} MiB |"
              f" {e['max_slice_ms']:.2f} ms |"
              f" {metadata(e) / max(1, e['objects']):.2f} B |")
        if after > 1.06 or after >= min(gr, gt) or after >= jr:
            misses.append(e["workload"])
    print()
    print("resident/live, resident from /proc/self/statm (RSS above the "
          "process's baseline); poold after = after TriggerDefragmentation's "
          "engine work (1 ms slices).")
    print("Targets (poold after <= 1.06, issue 10, and below glibc and "
          "jemalloc): "
          + ("all met" if not misses else "missed on " + ", ".join(misses)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r["engine"]["workload"] for r in rows]
    series = {
        "glibc": [ratio(r["glibc"]["rss"], r["glibc"]["live_bytes"]) for r in rows],
        "glibc + malloc_trim": [ratio(r["glibc"]["rss_after_trim"],
                                      r["glibc"]["live_bytes"]) for r in rows],
        "jemalloc": [ratio(r["jemalloc"]["rss"], r["jemalloc"]["live_bytes"])
                     if r["jemalloc"] else 0 for r in rows],
        "poold (before defrag)": [ratio(r["engine"]["rss"],
                                        r["engine"]["live_bytes"]) for r in rows],
        "poold (after defrag)": [ratio(r["engine"]["rss_after_defrag"],
                                       r["engine"]["live_bytes"]) for r in rows],
    }
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.16
    for i, (label, values) in enumerate(series.items()):
        xs = [k + (i - 2) * width for k in range(len(names))]
        ax.bar(xs, values, width, label=label)
    ax.axhline(1.06, color="black", linestyle="--", linewidth=0.8,
               label="target 1.06 (issue 10)")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("resident / live bytes")
    ax.set_title("RAMCloud fragmentation workloads (lower is better)")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
