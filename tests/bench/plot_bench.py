#!/usr/bin/env python3
"""Plot `moegen bench --json` results: time and bandwidth against T.

    python3 tests/bench/plot_bench.py BENCH.json [MORE.json ...] -o plot.png

Two panels, one line per spec and implementation: the median microseconds
per call (with the 10th-90th percentile band) and the achieved GB/s, with
the copy bandwidth the run measured as the roofline. Extra JSON files in
the same schema (tests/bench/routing_peers.py writes PyTorch's) add their
implementations beside moegen's. Needs matplotlib (pip install matplotlib);
not a test.
"""

import argparse
import json
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="moegen bench --json output")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    args = parser.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_bench.py: matplotlib is not installed "
                 "(pip install matplotlib)")

    runs = []
    for path in args.json:
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as e:
            sys.exit("plot_bench.py: %s: %s" % (path, e))

    fig, (time_ax, bw_ax) = plt.subplots(1, 2, figsize=(13, 5))
    roofs = set()
    # One colour per spec, one line style per implementation.
    specs = sorted({row["spec"] for run in runs for row in run["results"]})
    colours = {spec: "C%d" % (i % 10) for i, spec in enumerate(specs)}
    styles = ["-", "--", ":", "-."]
    for index, run in enumerate(runs):
        implementation = run.get("implementation", "moegen")
        roofs.add(run["copy_bandwidth_gbs"])
        lines = {}
        for row in run["results"]:
            lines.setdefault((row["spec"], row["entry"]), []).append(row)
        for (spec, entry), rows in sorted(lines.items()):
            rows.sort(key=lambda r: r["tokens"])
            tokens = [r["tokens"] for r in rows]
            label = "%s %s (%s)" % (implementation, spec, entry)
            style = dict(color=colours[spec],
                         linestyle=styles[index % len(styles)], marker="o",
                         markersize=3)
            time_ax.plot(tokens, [r["median_us"] for r in rows], label=label,
                         **style)
            time_ax.fill_between(tokens, [r["p10_us"] for r in rows],
                                 [r["p90_us"] for r in rows],
                                 color=colours[spec], alpha=0.15)
            bw_ax.plot(tokens, [r["gbs"] for r in rows], label=label, **style)
    for roof in sorted(roofs):
        bw_ax.axhline(roof, linestyle="--", color="grey")
        bw_ax.annotate("copy %.1f GB/s" % roof, (1, roof),
                       textcoords="offset points", xytext=(4, 4))
    first = runs[0]
    title = "%s, %s threads, %s" % (first.get("cpu", "?"),
                                     first.get("threads", "?"),
                                     first.get("date", "?"))
    for ax, ylabel in ((time_ax, "median us per call"), (bw_ax, "GB/s")):
        ax.set_xscale("log")
        ax.set_xlabel("tokens T")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    time_ax.set_yscale("log")
    bw_ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print("wrote %s" % args.output)


if __name__ == "__main__":
    main()
