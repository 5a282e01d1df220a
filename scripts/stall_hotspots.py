#!/usr/bin/env python3
"""Summarises `ncu --page source --csv --print-source sass` output: total warp
stall samples, and the instructions holding most of them (address, SASS,
share of samples). Usage: stall_hotspots.py source.csv [top N]"""
import csv, sys

path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
with open(path, newline="") as f:
    lines = [l for l in f if l.strip() and not l.startswith("==")]
rows = list(csv.reader(lines))
header_index = next(i for i, r in enumerate(rows) if any("Sampling" in c for c in r))
header, body = rows[header_index], rows[header_index + 1:]
print("columns:", "; ".join(header[:12]), "...")
def col(words):
    for i, c in enumerate(header):
        if all(w.lower() in c.lower() for w in words):
            return i
    return None
samples = col(["Sampling", "All"]) or col(["Sampling"])
source = col(["Source"])
address = col(["Address"])
def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0
entries = [(number(r[samples]), r[address] if address is not None else "", r[source] if source is not None else "")
           for r in body if len(r) > samples]
total = sum(e[0] for e in entries)
print(f"total stall samples: {total:.0f} over {len(entries)} instructions")
for value, addr, text in sorted(entries, reverse=True)[:top]:
    print(f"{100 * value / max(total, 1):6.2f}%  {addr:>8}  {text.strip()[:90]}")
