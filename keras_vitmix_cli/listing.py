"""`keras-vitmix models`: the registered variants as a table, read from the catalogue.

The catalogue (`catalog_data.py`, made by `python -m keras_vitmix_cli.catalog --write`)
is a Python literal, so listing imports neither Keras nor a backend; `--params` builds
each listed model and counts its parameters now instead.
"""

import fnmatch
import sys

from keras_vitmix_cli import catalog_data

COLUMNS = ("name", "family", "parameters", "input size", "timm weights", "accuracy", "description")
MISSING = "–"


def find(pattern=None):
    """The catalogue's rows (dicts) whose name matches the glob `pattern` (all if None)."""
    return [row for row in catalog_data.MODELS if pattern is None or fnmatch.fnmatch(row["name"], pattern)]


def _cells(row, sources):
    accuracy = ", ".join(f"{value} [{sources.index(source) + 1}]" for value, source in row["accuracy"])
    height, width = row["input_size"]
    return (row["name"], row["family"], f"{row['parameters']:,}", f"{height}x{width}",
            "yes" if row["timm_weights"] else "no", accuracy or MISSING, row["description"])


def format_table(rows):
    """The rows as text: a header, one aligned line per model, then what each accuracy
    note [n] refers to."""
    sources = list(dict.fromkeys(source for row in rows for _, source in row["accuracy"]))
    table = [COLUMNS, *(_cells(row, sources) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS) - 1)]
    right = {COLUMNS.index("parameters")}
    lines = [
        "  ".join([*(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))),
                   line[-1]])
        for line in table
    ]
    lines += [f"[{i}] benchmarks/RESULTS.md, {source} (its section names the run's data and budget)"
              for i, source in enumerate(sources, 1)]
    return "\n".join(lines)


def counted_now(rows):
    """`rows` with "parameters" counted by building each model now (imports Keras)."""
    from keras_vitmix.applications import create_model

    return [{**row, "parameters": create_model(row["name"]).count_params()} for row in rows]


def print_models(pattern=None, params=False):
    """Prints the table of the models matching `pattern`; returns the exit status (1:
    none matches)."""
    rows = find(pattern)
    if not rows:
        print(f"No model matches {pattern!r}.", file=sys.stderr)
        return 1
    print(format_table(counted_now(rows) if params else rows))
    return 0
