#!/usr/bin/env python3
"""plot_bench.py: draws marlin-bench's speedup over fp16 cuBLAS against the batch size m.

Reads the CSV that `marlin-bench --csv FILE` writes (columns gpu,set,m,group,
marlin_us,fp16_us,speedup,weight_gbs,copy_gbs,pct_copy) and plots one line per
shape set (and per group size and GPU, where the file holds several), with the
ideal speedup of a weight-bound kernel, 16 / (4 + 16 / g), as a dashed line per
group size g (3.88x at g = 128; 4x for one scale per column, g = -1 in the CSV).

Needs only matplotlib (pip install matplotlib). Example:
    python3 scripts/plot_bench.py bench/results/h100.csv --out bench/results/h100.png
"""
import argparse
import csv
import sys

COLUMNS = ["gpu", "set", "m", "group", "marlin_us", "fp16_us", "speedup", "weight_gbs", "copy_gbs", "pct_copy"]


def ideal_speedup(group):
    """fp16 weights move 16 bits; 4-bit weights move 4 bits plus a 16-bit scale per g weights."""
    if group <= 0:  # one scale per column: its cost vanishes for large k
        return 4.0
    return 16.0 / (4.0 + 16.0 / group)


def read_rows(path):
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != COLUMNS:
                sys.exit(f"plot_bench.py: {path}: expected columns {','.join(COLUMNS)}, found {reader.fieldnames}")
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    rows.append({"gpu": row["gpu"], "set": row["set"], "m": int(row["m"]),
                                 "group": int(row["group"]), "speedup": float(row["speedup"])})
                except (TypeError, ValueError):
                    sys.exit(f"plot_bench.py: {path}:{line}: malformed row {row}")
    except OSError as e:
        sys.exit(f"plot_bench.py: cannot read {path}: {e.strerror}")
    if not rows:
        sys.exit(f"plot_bench.py: {path} holds no results")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="The CSV comes from marlin-bench --csv FILE (see bench/README.md).")
    parser.add_argument("csv", help="CSV written by marlin-bench --csv")
    parser.add_argument("--out", default="bench_speedup.png", help="PNG to write (default: %(default)s)")
    parser.add_argument("--sets", default="ideal,llama2-70b",
                        help="comma-separated shape sets to draw (default: %(default)s)")
    parser.add_argument("--title", default=None, help="plot title (default: names the GPU)")
    args = parser.parse_args()

    try:
        import matplotlib  # imported late so --help works without it
    except ImportError:
        sys.exit("plot_bench.py: needs matplotlib (pip install matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(args.csv)
    wanted = [s for s in args.sets.split(",") if s]
    missing = [s for s in wanted if not any(r["set"] == s for r in rows)]
    if missing:
        sys.exit(f"plot_bench.py: {args.csv} has no rows for set(s) {', '.join(missing)}; "
                 f"it has {', '.join(sorted({r['set'] for r in rows}))}")
    rows = [r for r in rows if r["set"] in wanted]
    gpus = sorted({r["gpu"] for r in rows})
    groups = sorted({r["group"] for r in rows})

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for gpu in gpus:
        for group in groups:
            for name in wanted:
                points = sorted((r["m"], r["speedup"]) for r in rows
                                if r["gpu"] == gpu and r["group"] == group and r["set"] == name)
                if not points:
                    continue
                label = name
                if len(groups) > 1:
                    label += f", group {group if group > 0 else 'per column'}"
                if len(gpus) > 1:
                    label += f", {gpu}"
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    for group in groups:
        ideal = ideal_speedup(group)
        ax.axhline(ideal, linestyle="--", color="gray", linewidth=1)
        ax.annotate(f"ideal {ideal:.2f}x (g = {group if group > 0 else 'k'})", xy=(0.01, ideal),
                    xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
                    fontsize=8, color="gray")
    ms = sorted({r["m"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ms)
    ax.set_xticklabels([str(m) for m in ms])
    ax.set_xlabel("batch size m (rows of A)")
    ax.set_ylabel("speedup over fp16 cuBLAS")
    ax.set_ylim(bottom=0, top=max(4.5, max(r["speedup"] for r in rows) * 1.1))
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(args.title or f"marlin vs fp16 cuBLAS, {', '.join(gpus)}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
