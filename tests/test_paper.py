import csv
from pathlib import Path

import pytest

from biolab.errors import ConfigError, DataFileError
from biolab.paper import COLUMNS, PAPER_CSV, check_sources, paper_numbers, paper_value

FIG3 = "P3.1 Fig 3 left (= Fig 7 left)"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "paper_numbers.csv"  # the project's notes


def test_the_package_ships_the_papers_numbers():
    assert paper_value(FIG3, "bioS_single", "qa_test_acc", "mean") == 9.7
    assert paper_value(FIG3, "bioS_multi5_permute_fullname", "qa_test_acc", "mean") == 96.2
    assert paper_value(FIG3, "bioS_single", "qa_test_acc", "birth_date") == 33.5
    assert paper_value(FIG3, "majority_baseline", "qa_test_acc", "company_city") == 13.7
    assert (
        paper_value("P3.1 Fig 5 (= Fig 13a)", "bioS_single", "pprobe_first_token_acc", "company", 4) == 99.5
    )
    assert (
        paper_value("P3.1 Fig 13c", "bioS_multi5_permute", "pprobe_whole_attribute_acc", "university", "0")
        == 75.5
    )
    q = paper_value(
        "P3.1 Fig 7 (= Fig 16a)", "bioS_multi5_permute_fullname", "qprobe_whole_attribute_acc", "university"
    )
    assert q == 68.1


def test_rows_are_percents_and_the_provenance_header_is_skipped():
    rows = paper_numbers()
    assert PAPER_CSV.read_text().startswith("#") and len(rows) == 1409
    assert all(0 <= r["value"] <= 100 for r in rows) and set(rows[0]) == set(COLUMNS)
    fig3 = {r["data"] for r in rows if r["figure"] == FIG3}
    assert len(fig3 - {"majority_baseline"}) == 16  # the paper's 16 bioS datasets
    rows[0]["value"] = -1.0  # callers get copies
    assert paper_numbers()[0]["value"] != -1.0


def test_fixed_order_data_has_no_probe_number_after_its_attribute():
    assert (
        paper_value("P3.1 Fig 5 (= Fig 13a)", "bioS_single", "pprobe_first_token_acc", "birth_date", 0) == 100
    )
    assert (
        paper_value("P3.1 Fig 5 (= Fig 13a)", "bioS_single", "pprobe_first_token_acc", "birth_date", 1)
        is None
    )


def test_mixed_training_is_read_by_its_qar_method():
    fig10 = "P3.1 Fig 10"
    assert paper_value(fig10, "bioS_single", "qa_test_acc", "mean", method="mixed training QAr=0.2") == 53.6
    assert (
        paper_value(fig10, "bioS_multi5_permute", "qa_test_acc", "mean", method="mixed training QAr=0.8")
        == 95.2
    )
    with pytest.raises(ConfigError, match="several methods; pick one of: mixed training QAr=0.1"):
        paper_value(fig10, "bioS_single", "qa_test_acc", "mean")
    with pytest.raises(ConfigError, match="no method 'mixed training QAr=0.5'"):
        paper_value(fig10, "bioS_single", "qa_test_acc", "mean", method="mixed training QAr=0.5")


def test_a_typo_is_an_error_but_an_unreported_cell_is_none():
    with pytest.raises(ConfigError, match="unknown paper source 'P3.1 Fig 33'"):
        paper_value("P3.1 Fig 33", "bioS_single", "qa_test_acc", "mean")
    with pytest.raises(ConfigError, match="has no metric 'qa_acc'"):
        paper_value(FIG3, "bioS_single", "qa_acc", "mean")
    assert paper_value(FIG3, "bioS_couple2", "qa_test_acc", "mean") is None


def test_a_malformed_file_names_its_line(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text(
        "# note\n" + ",".join(COLUMNS) + "\nF,d,m,x,qa_test_acc,mean,,9.7\nF,d,m,x,qa_test_acc,major,,n/a\n"
    )
    with pytest.raises(DataFileError, match=r"p.csv:4: value 'n/a' is not a number"):
        paper_numbers(bad)
    bad.write_text("figure,data,value\nF,d,1\n")
    with pytest.raises(DataFileError, match="p.csv:1: header must be"):
        paper_numbers(bad)


@pytest.mark.skipif(not SHARED.is_file(), reason="the project's shared notes are not beside this checkout")
def test_the_package_copy_equals_the_shared_table():
    with open(SHARED, newline="", encoding="utf-8") as f:
        shared = [{**r, "value": float(r["value"])} for r in csv.DictReader(f)]
    assert shared == paper_numbers()


def test_a_config_naming_an_unknown_figure_fails_before_any_run():
    check_sources({"qa": FIG3, "qprobe": "P3.1 Fig 7 (= Fig 16a)", "statements": ["x"]})
    with pytest.raises(ConfigError, match="unknown paper source.*'qprobe': 'P3.1 Fig 7 right'"):
        check_sources({"qa": FIG3, "qprobe": "P3.1 Fig 7 right"})


def test_the_capacity_reference_holds_the_laws_and_the_digitised_peaks(tmp_path):
    from biolab.paper import capacity_reference

    ref = capacity_reference()
    laws = {r["exposures"]: r["value"] for r in ref if r["kind"] == "law"}
    assert laws == {1000: 2.0, 100: 1.0}
    peaks = {r["N"]: r["value"] for r in ref if r["kind"] == "peak_R"}
    assert peaks[100_000] == 2.16 and all(r["source"] for r in ref)
    bad = tmp_path / "ref.csv"
    bad.write_text("kind,exposures,N,value,source\nlaw,1000,,two,x\n")
    with pytest.raises(DataFileError, match="ref.csv"):
        capacity_reference(bad)
