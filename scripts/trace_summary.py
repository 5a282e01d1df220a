#!/usr/bin/env python3
"""trace_summary.py: where the time of back-to-back marlin_matmul calls goes.

Reads the CSV that `marlin-bench --trace FILE` writes (a build configured with
-DMARLIN_TRACE=ON: one row per block and launch, global-timer stamps in ns)
and prints, per layer and m, medians over the launches after the first:
  span      first block start -> last block end of a launch
  gap       previous launch's last end -> this launch's first start
            (negative: the launches overlap, programmatic dependent launch)
  start     first -> last block start (blocks waiting for a free SM slot)
  wait      block start -> griddepcontrol.wait returned (median over blocks)
  fill      wait returned -> first stage landed (median over blocks)
  loop      first stage -> last slice's epilogue (median over blocks)
  epilogue  last epilogue -> block end (median; max in brackets)
  and, for the blocks whose last slice is partial (the last to arrive sums it):
  sums      last epilogue -> its k-group sums done (median)
  arrive    -> arrival known: slot published, last or not (median)
  last sum  -> block end, for the last arrivers (median; max in brackets)
  period    first start -> next launch's first start (the time per call)
"""
import argparse
import csv
import statistics
import sys
from collections import defaultdict


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="the --trace file of marlin-bench")
    args = parser.parse_args()
    launches = defaultdict(lambda: defaultdict(list))  # (layer, k, n, m) -> launch -> rows
    with open(args.csv, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["layer"], int(row["k"]), int(row["n"]), int(row["m"]))
            stamps = {name: int(row[name]) for name in
                      ("start_ns", "waited_ns", "first_stage_ns", "last_finish_ns", "end_ns")}
            if min(stamps.values()) < 0:
                continue  # a block without every stamp (it had no work)
            for name in ("reduced_ns", "arrived_ns"):  # set only where the epilogue has that phase
                stamps[name] = int(row.get(name, -1) or -1)
            launches[key][int(row["launch"])].append(stamps)
    if not launches:
        sys.exit("no complete block records in %s" % args.csv)
    print("%-8s %6s %6s %5s %6s | %8s %8s %8s %8s %8s %8s %8s %14s | %6s %6s %14s  (us)" %
          ("layer", "k", "n", "m", "blocks", "period", "span", "gap", "start", "wait", "fill", "loop", "epilogue",
           "sums", "arrive", "last sum"))
    for key, by_launch in launches.items():
        order = sorted(by_launch)
        first_start = {l: min(b["start_ns"] for b in by_launch[l]) for l in order}
        last_start = {l: max(b["start_ns"] for b in by_launch[l]) for l in order}
        last_end = {l: max(b["end_ns"] for b in by_launch[l]) for l in order}
        later = order[1:] or order
        per = defaultdict(list)
        for i, l in enumerate(order):
            blocks = by_launch[l]
            if l not in later:
                continue
            per["span"].append(last_end[l] - first_start[l])
            per["start"].append(last_start[l] - first_start[l])
            if i > 0:
                per["gap"].append(first_start[l] - last_end[order[i - 1]])
            if i + 1 < len(order):
                per["period"].append(first_start[order[i + 1]] - first_start[l])
            per["wait"].append(median([b["waited_ns"] - b["start_ns"] for b in blocks]))
            per["fill"].append(median([b["first_stage_ns"] - b["waited_ns"] for b in blocks]))
            per["loop"].append(median([b["last_finish_ns"] - b["first_stage_ns"] for b in blocks]))
            per["epilogue"].append(median([b["end_ns"] - b["last_finish_ns"] for b in blocks]))
            per["epilogue_max"].append(max(b["end_ns"] - b["last_finish_ns"] for b in blocks))
            partial = [b for b in blocks if b["arrived_ns"] >= 0]
            summed = [b for b in partial if b["reduced_ns"] >= 0]
            per["sums"].append(median([b["reduced_ns"] - b["last_finish_ns"] for b in summed]))
            per["arrive"].append(median([b["arrived_ns"] - (b["reduced_ns"] if b["reduced_ns"] >= 0
                                                            else b["last_finish_ns"]) for b in partial]))
            # the last arrivers are the partial blocks that did not end at arrival
            last = [b["end_ns"] - b["arrived_ns"] for b in partial if b["end_ns"] - b["arrived_ns"] > 200]
            per["last_sum"].append(median(last))
            per["last_sum_max"].append(max(last) if last else float("nan"))
        us = {name: median(values) / 1e3 for name, values in per.items()}
        blocks = median([len(by_launch[l]) for l in later])
        print("%-8s %6d %6d %5d %6d | %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %6.2f [%5.2f] | %6.2f %6.2f %6.2f [%5.2f]" %
              (key[0], key[1], key[2], key[3], blocks, us.get("period", float("nan")), us["span"],
               us.get("gap", float("nan")), us["start"], us["wait"], us["fill"], us["loop"], us["epilogue"],
               us["epilogue_max"], us["sums"], us["arrive"], us["last_sum"], us["last_sum_max"]))


if __name__ == "__main__":
    main()
