#!/usr/bin/env python3
"""Pools the rounds of several `realistic-1000.sh` outputs (issue 15 item 9).

On a shared VM one run's medians move with the host: psql's own time alone
varies 0.19-0.29 s between rounds. Pooling the rounds of runs made back to
back (alternating builds when comparing two) gives a figure that holds still:

    for i in 1 2 3 4; do
      BENCH_BIN=<dir> BENCH_SKIP_BUILD=1 nice -n -20 deploy/bench/realistic-1000.sh 1000 12 > run-$i.log
    done
    deploy/bench/pool_rounds.py run-*.log

Prints, over all rounds: the median of the per-round ratios (each batch
against the psql run of its own round) with the quartiles, the ratio of the
medians, and the unchanged redeploy against the first deploy.
"""

import re
import statistics
import sys

ROUND = re.compile(
    r"psql -1 -f\s+([\d.]+) s\s+first-ever batch\s+([\d.]+) s \(([\d.]+)\)"
    r"\s+promotion batch\s+([\d.]+) s \(([\d.]+)\)\s+unchanged again\s+([\d.]+) s"
)


def main(paths):
    psql, first, promotion, again = [], [], [], []
    # Each round's own ratios as the script printed them (from unrounded
    # times); the seconds are rounded to 10 ms, fine for the medians.
    first_ratios, promotion_ratios = [], []
    for path in paths:
        with open(path, encoding="utf-8") as log:
            for match in ROUND.finditer(log.read()):
                p, f, fr, q, qr, a = (float(match.group(i)) for i in range(1, 7))
                first_ratios.append(fr)
                promotion_ratios.append(qr)
                psql.append(p)
                first.append(f)
                promotion.append(q)
                again.append(a)
    if not psql:
        sys.exit("no rounds found: give the outputs of deploy/bench/realistic-1000.sh")
    median = statistics.median

    def paired(batch, ratios):
        q1, q2, q3 = statistics.quantiles(ratios, n=4)
        return f"per-round median {q2:.2f} (quartiles {q1:.2f}-{q3:.2f}), ratio of medians {median(batch) / median(psql):.2f}"

    print(f"{len(psql)} rounds from {len(paths)} run(s); psql -1 -f median {median(psql):.3f} s")
    print(f"first-ever batch / psql: {paired(first, first_ratios)}   (target <= 1.3)")
    print(f"promotion batch / psql:  {paired(promotion, promotion_ratios)}   (target <= 1.3)")
    print(f"unchanged redeploy / first-ever: {median(again) / median(first):.2f}   (target <= 0.5)")


if __name__ == "__main__":
    main(sys.argv[1:])
