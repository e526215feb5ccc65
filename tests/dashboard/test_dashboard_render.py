"""The dashboard page written from a test database: content, links, escaping, no network assets."""
import re

import pytest
from xqhil.dashboard import render_dashboard
from xqhil.history import HistoryError, RunStore


@pytest.fixture
def page(history_db, tmp_path):
    index = render_dashboard(history_db, tmp_path / "dash")
    return index, index.read_text(encoding="utf-8")


def test_every_run_is_on_the_page(page):
    _, html = page
    assert sorted(set(map(int, re.findall(r'data-run="(\d+)"', html)))) == list(range(1, 8))


def test_one_section_per_model_and_board_with_charts(page):
    _, html = page
    sections = re.findall(r'<section class="card" id="([^"]+)"', html)
    assert len(sections) == 2
    assert html.count('<svg class="chart"') == 2 * 5  # INT8, FP32 latency, speedup, accuracy, SNR
    assert "INT8 latency over runs" in html and "(emulated: not chip latency)" in html
    assert "top-1 agreement, chip vs PC (unlabelled data)" in html  # the unlabelled qemu runs
    for version in ("1.20.1", "1.21.0", "1.22.0", "1.22.1"):
        assert f">{version}</text>" in html  # runtime-version groups on the x axis


def test_flagged_list_names_slowdown_and_chip_bug_with_report_links(page):
    index, html = page
    flagged = re.findall(r'<tr class="flagged" data-flag-run="(\d+)">(.*?)</tr>', html, re.DOTALL)
    kinds = {(int(run), kind) for run, row in flagged
             for kind in re.search(r'class="kind-bad">(.*?)</td>', row).group(1).split("<br>")}
    assert (3, "latency regression") in kinds
    assert (4, "chip bug") in kinds and (4, "accuracy regression") in kinds
    row3 = next(row for run, row in flagged if run == "3")
    assert "appeared with onnxruntime 1.21.0 (run 3)" in row3
    href = re.search(r'<a href="([^"]+)">md</a>', row3).group(1)
    assert href == "../runs/3/verify.md"
    assert (index.parent / href).resolve().is_file()


def test_release_matrix_shows_where_each_release_broke_what(page):
    _, html = page
    matrix = html.split('id="releases"')[1].split("<tbody>")[1].split("</table>")[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<tr><th>([^<]+)</th>(.*?)</tr>", matrix)}
    assert list(rows) == ["1.20.1", "1.21.0", "1.22.0", "1.22.1"]
    assert re.search(r'class="st-regression"[^>]*>INT8 \+2\d%<', rows["1.21.0"])
    assert re.search(r'class="st-bug"[^>]*>chip bug -1\d\.\d pts, SNR -2\d dB<', rows["1.22.0"])
    assert 'class="st-ok"' in rows["1.22.1"] and 'class="st-none"' in rows["1.22.1"]


def test_device_fingerprints_table(page, history_db):
    _, html = page
    with RunStore.open(history_db) as store:
        from xqhil.history.doc import fingerprint
        ids = {fingerprint(r.doc)["id"] for r in store.list()}
    table = html.split('id="fingerprints"')[1]
    assert all(i in table for i in ids)
    assert "SpacemiT X60" in table and "CPUExecutionProvider" in table


def test_strings_are_escaped(page):
    _, html = page
    assert "resnet&lt;8&gt;" in html and "resnet<8>" not in html


def test_self_contained_without_network(page):
    _, html = page
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)=', html)
    assert "<style>" in html and "<script>" in html


def test_missing_report_is_marked(history_db, tmp_path):
    (tmp_path / "runs" / "2" / "verify.md").unlink()
    html = render_dashboard(history_db, tmp_path / "dash").read_text()
    assert re.search(r'<a href="../runs/2/verify.md" class="missing"', html)


def test_empty_database_renders_a_page(tmp_path):
    RunStore.open(tmp_path / "empty.sqlite3").close()
    html = render_dashboard(tmp_path / "empty.sqlite3", tmp_path / "dash").read_text()
    assert "No runs recorded yet" in html and "nothing flagged" in html


def test_rewrite_is_atomic_and_leaves_no_temporary_files(history_db, tmp_path):
    out = tmp_path / "dash"
    render_dashboard(history_db, out)
    render_dashboard(history_db, out)
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]


def test_missing_database_is_an_error(tmp_path):
    with pytest.raises(HistoryError) as info:
        render_dashboard(tmp_path / "nope.sqlite3", tmp_path / "dash")
    assert info.value.exit_code == 2 and not (tmp_path / "dash").exists()
