"""Shared by the scripts that time one choice in whole models (xla_options.py,
jax_cpu_routes.py, torch_routes.py): two copies of a model with the same weights, each
run under one side of the choice (traced under it, or under torch called under it), timed
alternately in balanced order."""

import statistics

from _timing import alternate, median_ratio  # benchmarks/ is the scripts' folder


def time_twins(build, batch, sides, repeats, every_call=False):
    """Times two copies of `build()` that share their weights.

    Args:
        build: returns a new model.
        batch: batch size of the timed calls.
        sides: {name: context_factory}, two entries, the first the choice measured and
            the second what it is compared with; `context_factory(model)` returns a
            context manager in which the copy's steps are traced (its first
            `predict_on_batch` and `train_on_batch`).
        repeats: timed rounds per task.
        every_call: enter the copy's context around every call, not only the first
            ones: for a choice made at each call (torch runs eagerly, nothing is traced).

    Returns:
        {"max_diff": largest difference between the copies' predictions, before any
        training step, "infer": {name: median seconds, ..., "ratio": median of per-round
        ratios first ÷ second}, "train": the same for a training step (AdamW)}.
    """
    import keras
    import numpy as np

    names = list(sides)
    copies = {name: build() for name in names}
    copies[names[1]].set_weights(copies[names[0]].get_weights())
    first = copies[names[0]]
    x = np.random.default_rng(0).uniform(0, 255, (batch, *first.input_shape[1:])).astype("float32")
    y = np.arange(batch) % first.output_shape[-1]
    predictions = {}
    for name, model in copies.items():
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy")
        with sides[name](model):
            predictions[name] = model.predict_on_batch(x)
            model.train_on_batch(x, y)
    row = {"max_diff": float(np.abs(predictions[names[0]] - predictions[names[1]]).max())}

    def timed(name, step):
        if not every_call:
            return step

        def within():
            with sides[name](copies[name]):
                return step()

        return within

    tasks = {
        "infer": {name: timed(name, lambda m=model: m.predict_on_batch(x)) for name, model in copies.items()},
        "train": {name: timed(name, lambda m=model: m.train_on_batch(x, y)) for name, model in copies.items()},
    }
    for task, fns in tasks.items():
        times = alternate(fns, repeats, balanced=True)
        row[task] = {name: statistics.median(times[name]) for name in names}
        row[task]["ratio"] = median_ratio(times[names[0]], times[names[1]])
    return row


def twin_table(rows, lead, sides):
    """A Markdown table: the `lead` columns ({header: function of the row giving the
    cell}), then per task the second side's time, the first side's time and their ratio,
    then the predictions' gap. `sides`: ((key, label) of the first side, of the second)."""
    measured, compared = sides
    headers = list(lead) + [
        f"infer, {compared[1]}", f"infer, {measured[1]}", "÷",
        f"train step, {compared[1]}", f"train step, {measured[1]}", "÷", "max prediction gap",
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(lead) + "---:|" * (len(headers) - len(lead))]
    for row in rows:
        cells = [cell(row) for cell in lead.values()]
        for task in ("infer", "train"):
            r = row[task]
            cells += [f"{r[compared[0]] * 1e3:.0f} ms", f"{r[measured[0]] * 1e3:.0f} ms", f"{r['ratio']:.2f}×"]
        cells.append(f"{row['max_diff']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def emit_twin_rows(names, models, args, sides, every_call=False, **extra):
    """`time_twins` for each registered model name in `names`, each row (with its
    "model", "batch" and `extra` keys) printed with `emit` for the parent process.

    `models` gives each name's (create_model overrides, batch size); `args.overrides`
    (JSON) and `args.batch_size` replace them where given."""
    import json

    import keras

    from _timing import emit
    from keras_vitmix.applications import create_model

    for name in names:
        overrides, batch = models.get(name, ({}, 32))
        overrides = json.loads(args.overrides) if args.overrides else overrides
        batch = args.batch_size or batch
        keras.utils.set_random_seed(0)
        row = time_twins(lambda: create_model(name, **overrides), batch, sides, args.repeats, every_call)
        described = f" ({', '.join(f'{k} {v}' for k, v in overrides.items())})" if overrides else ""
        emit({**extra, "model": name + described, "batch": batch, **row})
        keras.backend.clear_session()


def route_parser(doc, routes, results):
    """The route scripts' shared options; the script adds its batch options."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--routes", nargs="+", default=list(routes), choices=list(routes))
    parser.add_argument("--models", nargs="+", default=None, help="registered names (default: each route's)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--overrides", default=None, help="JSON create_model overrides for every model (tests)")
    parser.add_argument("--results", default=str(results))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def route_table(rows):
    """`twin_table` for the route scripts (jax_cpu_routes.py, torch_routes.py): a row per
    route, model and batch, the time without the route, with it, and the ratio."""
    lead = {"route": lambda r: f"`{r['route']}`", "model": lambda r: f"`{r['model']}`", "batch": lambda r: str(r["batch"])}
    return twin_table(rows, lead, (("route", "route"), ("without", "without")))


def route_main(argv, parse, worker, script, backend, title, note):
    """A route script's `main`: in the worker process (`--worker`), `worker(args)`; in
    the parent, runs the worker under `backend`, prints the table, and unless
    `--no-record` appends it to `args.results` under `title`, with the medians'
    description and `note`. Returns the rows."""
    import sys

    from _timing import append_section, run_backends

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args.worker:
        return worker(args)
    rows = run_backends(script, [backend], argv, route_table)
    if rows and not args.no_record:
        append_section(
            args.results, title, script, argv,
            f"Medians of {args.repeats} alternating rounds in balanced order, one process; ÷ = median of per-round "
            f"ratios (with the route ÷ without it, below 1 = the route is faster); {note}",
            [route_table(rows)],
        )
    return rows
