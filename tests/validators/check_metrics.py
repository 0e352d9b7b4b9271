#!/usr/bin/env python3
"""Parse a Prometheus scrape with the Prometheus project's own Python parsers.

Usage:
    .venv/bin/python tests/validators/check_metrics.py CONTENT_TYPE < body

The parser follows the response's Content-Type, as Prometheus does:

  * ``application/openmetrics-text``: ``prometheus_client.openmetrics.parser``,
    a strict OpenMetrics 1.0 parser (``# EOF``, family/sample names and types,
    ``_total`` on counters, canonical numbers, cumulative histogram buckets
    ending in ``+Inf`` that equals ``_count``...);
  * ``text/plain; version=0.0.4``: ``prometheus_client.parser``, the text
    format 0.0.4 parser (it names counter families without ``_total``, as
    OpenMetrics does, so both formats give the same families).

Prints the families as JSON on stdout, one object per family:
    {"name", "type", "help", "unit", "samples": [{"name", "labels", "value"}]}
Exit status: 0 when the body parses, 1 with the parser's message on stderr
when it does not, 2 on usage or a missing package (.ci/peers.sh install).
"""

from __future__ import annotations

import json
import math
import sys


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    content_type = sys.argv[1]
    try:
        if content_type.startswith("application/openmetrics-text"):
            from prometheus_client.openmetrics.parser import text_string_to_metric_families
        elif content_type.startswith("text/plain"):
            from prometheus_client.parser import text_string_to_metric_families
        else:
            print(f"not a Prometheus content type: {content_type!r}", file=sys.stderr)
            return 1
    except ImportError as e:
        print(f"{e}: run .ci/peers.sh install", file=sys.stderr)
        return 2

    body = sys.stdin.read()
    try:
        families = []
        for family in text_string_to_metric_families(body):
            samples = []
            for s in family.samples:
                value = s.value
                if isinstance(value, float) and not math.isfinite(value):
                    value = str(value)
                samples.append({"name": s.name, "labels": s.labels, "value": value})
            families.append(
                {
                    "name": family.name,
                    "type": family.type,
                    "help": family.documentation,
                    "unit": family.unit,
                    "samples": samples,
                }
            )
    except Exception as e:  # the parsers raise ValueError and friends
        print(f"{content_type}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump(families, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
