"""`dreamrelation benchmark run CONFIG.yaml`: the paper's comparison as one resumable runner.

For every relation (a dataset folder) the runner caches the videos once, trains every (method,
seed), renders the evaluation prompts with each trained file and with the base model (the ``base``
row), scores each folder with ``dreamrelation.evaluation`` and writes the table: mean ± std over
seeds, per relation and averaged over relations, as Markdown, CSV and a PNG plot. With the toy
backbone and the ``toy`` prompt set, the toy world's oracle scores every run as well.

Output layout (every stage leaves a marker written atomically, so a rerun skips it)::

    OUT/cache/<relation>/              the cache (+ DONE.json); OUT/cache/<relation>/seed<k>/ when the
                                       relation's dataset folder depends on the seed ({seed} in data)
    OUT/runs/<relation>/<method>/seed<k>/train/        training output (+ DONE.json)
    OUT/runs/<relation>/<method>/seed<k>/videos/       rendered prompts (+ manifest.json, DONE.json)
    OUT/runs/<relation>/<method>/seed<k>/evaluation/   results.json, per_video.csv, summary.csv
    OUT/results.json, OUT/benchmark.md, OUT/benchmark.csv, OUT/benchmark.png

Benchmark seed ``k`` seeds training and shifts every prompt's noise seed by ``k * SEED_STRIDE``, so
seed 0 renders the shipped set's own seeds and the base row has a seed spread too. The ``toy`` set
instead draws its prompts per seed, as the toy world's experiments always have (new subjects,
backgrounds and noise seeds for each seed; no shift).

A row of the table is a training method or a named variant of one (``variants``: the method plus
its own training settings, e.g. an ablation).

One module per job: :mod:`.config` (the schema), :mod:`.plan` (every stage's config, checked before
any work, and the output folder's markers), :mod:`.stages` (cache, train, render, evaluate),
:mod:`.tables` (Markdown, CSV, plot) and :mod:`.prompt_sets` (prompt sets drawn by code with their own
scorer: where the toy world plugs in).
"""

from __future__ import annotations

from dreamrelation.benchmark.config import (
    BASE,
    METRIC_LABELS,
    BenchmarkConfig,
    RelationData,
    Variant,
    load_benchmark_config,
)
from dreamrelation.benchmark.plan import Plan, Run, plan, run_folder, trained_lora
from dreamrelation.benchmark.prompt_sets import DrawnPromptSet, drawn_prompt_set, register_prompt_set
from dreamrelation.benchmark.stages import (
    Stages,
    collect_results,
    default_stages,
    read_results,
    run_benchmark,
)
from dreamrelation.benchmark.tables import average_over_relations, markdown_table, summarize, write_tables

__all__ = [
    "BASE",
    "METRIC_LABELS",
    "BenchmarkConfig",
    "DrawnPromptSet",
    "Plan",
    "RelationData",
    "Run",
    "Stages",
    "Variant",
    "average_over_relations",
    "collect_results",
    "default_stages",
    "drawn_prompt_set",
    "load_benchmark_config",
    "markdown_table",
    "plan",
    "read_results",
    "register_prompt_set",
    "run_benchmark",
    "run_folder",
    "summarize",
    "trained_lora",
    "write_tables",
]
