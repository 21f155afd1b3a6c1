"""What a person reads in the Dagster UI: figures to 3 significant digits, rates as percentages, the
evaluation plot stacked so it fits the metadata dialog."""

from __future__ import annotations

import io

import pandas as pd
from PIL import Image

from deer_reid_assets.defs.common import figure, md_table, rate
from deer_reid_assets.defs.evaluation import headline_table


def test_figures_and_rates_as_a_person_reads_them():
    assert figure(0.9385474860335196).value == 0.939 and rate(0.9385474860335196).value == "93.9%"
    table = md_table(pd.DataFrame({"epoch": [1, 2], "lr": [0.002, 1.5e-05], "loss": [2.345678, 1234.5678]})).value
    assert "1.5e-05" in table and "0.002" in table and "2.35" in table and "1235" in table
    assert "0.000" not in table and "2.345678" not in table
    head = headline_table({"test": {"assignment_rate": 0.5, "false_match_rate": 0.9385474860335196, "rank1": 0.12345,
                                    "best_threshold": None, "n_queries": 40}})
    cells = dict(zip(head["metric"], head["test"]))
    assert cells["assignment rate at threshold"] == "50%" and cells["false-match rate at threshold"] == "93.9%"
    assert cells["rank-1"] == "0.123" and cells["best threshold with FMR <= budget"] == "none qualifies"
    assert cells["queries"] == "40"


def test_the_evaluation_plot_is_stacked():
    from deer_reid_assets.core.evaluation.plots import evaluation_plot
    from deer_reid_assets.core.evaluation.report import evaluate
    from deer_reid_assets_tests.test_metrics import clustered_dataset

    report = evaluate(*clustered_dataset())
    width, height = Image.open(io.BytesIO(evaluation_plot(report, "stacked"))).size
    assert height > width  # two panels one above the other
