"""orbitseg.report: one self-contained HTML report of a tiny cross-validation run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from orbitseg.errors import InputError
from orbitseg.report.html import PAPER_TABLE1, write_report


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    from orbitseg.train import train

    out = tmp_path_factory.mktemp("report") / "run"
    train(tiny_dataset, "all", epochs=1, batch_size=4, seed=0, out=out,
          overrides={"widths": (4, 8), "bottleneck_lstm_hidden": 4, "head_lstm_hidden": 4,
                     "max_steps_per_epoch": 2, "threads": 1, "surface": False}, progress=False)
    return out


#: Chung et al., J. Vis. Exp. 189, e64500 (2022), Table 1, the SEQ-UNET row as printed in the paper
#: (/work/shared/seed/): Multi-Label DICE, VS; Label 1 (Eyeball) DICE, VS; Label 2 (Extraocular muscle)
#: DICE, VS; Label 3 (Optic nerve) DICE, VS
SEED_TABLE1_ROW = (0.79, 0.82, 0.86, 0.83, 0.54, 0.65, 0.34, 0.8)


def test_paper_table1_is_the_papers():
    """The code's copy of the paper's Table 1 is the paper's, number for number (issue 24: the report
    test compared the report with the code's own copy, so a typo in it passed)."""
    assert PAPER_TABLE1 == {"all": (0.79, 0.82), "eyeball": (0.86, 0.83), "muscles": (0.54, 0.65),
                            "nerve": (0.34, 0.80)}
    assert [v for k in ("all", "eyeball", "muscles", "nerve") for v in PAPER_TABLE1[k]] == list(SEED_TABLE1_ROW)


def _rows(run: Path) -> list[dict]:
    return [r for d in sorted(run.glob("fold_*")) for r in json.loads((d / "metrics" / "per_case.json").read_text())]


def test_report_is_complete_and_self_contained(tiny_run):
    out = write_report(tiny_run)
    assert out == tiny_run / "report.html" and out.is_file()
    text = out.read_text(encoding="utf-8")
    assert 'src="http' not in text and "<link" not in text and "<script" not in text
    assert text.count("data:image/png;base64,") >= 3
    # the paper's row of Table 1, cell by cell in the paper's column order (the seed's literals)
    paper_row = re.search(r'<tr class="paper">(.*?)</tr>', text).group(1)
    assert re.findall(r"<td>([0-9.]+)</td>", paper_row) == [f"{v:.2f}" for v in SEED_TABLE1_ROW]
    heads = re.findall(r'<th colspan="2">(.*?)</th>', text)[:4]
    assert heads == ["Multi-label", "Label 1 (Eyeball)", "Label 2 (Extraocular muscle)", "Label 3 (Optic nerve)"]
    assert "Chung et al." in text and "validation" in text and "per 2D batch" in text

    rows = _rows(tiny_run)
    assert rows
    # our row: mean +- sd of every test case, as computed from the per-case JSON
    for key in ("dice_eyeball", "dice_all", "vs_nerve"):
        vals = np.array([r[key] for r in rows if r[key] is not None], dtype=float)
        assert f"{vals.mean():.3f} ± {vals.std(ddof=1):.3f}" in text, key
    # the cross-validation summary train() wrote agrees with the rows the report pooled
    cv = json.loads((tiny_run / "metrics" / "summary.json").read_text())
    cv_mean = next(r["mean"] for r in cv["summary"] if r["group"] == "all" and r["metric"] == "dice_eyeball")
    assert f"{cv_mean:.3f}" in text

    # each fold's post-processing choice (made on its validation cases) is stated
    for d in sorted(tiny_run.glob("fold_*")):
        rules = json.loads((d / "postprocess.json").read_text())["rules"]
        assert f"{d.name.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in rules.items()) in text

    # clinical measurements: per-orbit volumes of the test cases, predicted against true
    assert "Clinical measurements" in text
    import csv

    meas = [r for d in sorted(tiny_run.glob("fold_*"))
            for r in csv.DictReader(open(d / "metrics" / "measurements.csv"))]
    orbits = [r for r in meas if r["side"] in ("right", "left")]
    assert len(orbits) == 2 * len(rows)
    bias = np.mean([float(r["globe_ml_pred"]) - float(r["globe_ml_true"]) for r in orbits])
    assert f"<td>{bias:+.2f}</td>" in text

    # best / median / worst by multi-label Dice are named, each with its case id
    order = sorted(rows, key=lambda r: r["dice_all"])
    for role, r in (("Best", order[-1]), ("Median", order[(len(order) - 1) // 2]), ("Worst", order[0])):
        assert re.search(rf"<h3>{role}: {re.escape(r['case'])} ", text), role
    # results by slice thickness: every test case lands in the group of its reference's slice spacing
    assert "By slice thickness" in text
    thin = [r for r in rows if r["slice_mm"] <= 1.25]
    thick = [r for r in rows if r["slice_mm"] > 2.0]
    mid = [r for r in rows if 1.25 < r["slice_mm"] <= 2.0]
    for title, group in (("thin, &lt;= 1.25 mm", thin), ("1.5-2 mm", mid), ("thick, &gt; 2 mm", thick)):
        assert (f'<td class="l">{title}</td><td>{len(group)}</td>' in text) == bool(group), title
    assert "not in this table" not in text
    # every case is in the per-case table
    for r in rows:
        assert f">{r['case']}" in text


def test_thickness_table_says_which_cases_it_lacks():
    from orbitseg.report.html import _thickness_table

    rows = [{"case": "a", "slice_mm": 1.0, "dice_eyeball": 0.9}, {"case": "b", "slice_mm": 3.0, "dice_eyeball": 0.8},
            {"case": "c", "dice_eyeball": 0.7}]
    html = _thickness_table(rows)
    na = '<td><span class="na">n/a</span></td>'
    assert f'thin, &lt;= 1.25 mm</td><td>1</td>{na}<td>0.900</td>' in html
    assert f'thick, &gt; 2 mm</td><td>1</td>{na}<td>0.800</td>' in html and "1.5-2 mm" not in html
    assert "1 test case(s) are not in this table" in html
    assert _thickness_table([{"case": "c", "dice_eyeball": 0.7}]) is None


def test_report_custom_out_and_missing_pieces(tiny_run, tmp_path):
    run = tmp_path / "partial"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "fold_1" / "metrics")
    shutil.rmtree(run / "fold_2" / "segmented")
    (run / "fold_3" / "log.csv").unlink()
    out = write_report(run, tmp_path / "sub" / "r.html", dataset=tmp_path / "nowhere")
    text = out.read_text(encoding="utf-8")
    assert "fold 1 metrics: per_case.json is missing" in text
    assert "fold 3: log.csv is missing" in text
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left nothing behind


def test_single_fold_folder(tiny_run, tmp_path):
    out = write_report(tiny_run / "fold_0", tmp_path / "f0.html")
    text = out.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "Best:" in text


def test_not_a_run_raises(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(InputError, match="stuff"):
        write_report(tmp_path / "stuff")
    with pytest.raises(InputError, match="missing_dir"):
        write_report(tmp_path / "missing_dir")
    assert not (tmp_path / "stuff" / "report.html").exists()
