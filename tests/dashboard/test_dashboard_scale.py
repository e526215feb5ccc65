"""The dashboard as a release report at team scale (tests/dashboard/conftest.py::team_db): what the newest
runtime release changed, board health, the matrix per board capped to the newest releases, INFRA runs as
no measurement, one page per model/board with older runs aggregated."""
import re

import pytest
from dashboard_testlib import infra_doc, record_plain
from history_testlib import make_doc
from xqhil.dashboard import render_dashboard
from xqhil.dashboard.model import KEEP_RUNS
from xqhil.dashboard.render import VISIBLE_RELEASES


@pytest.fixture(scope="module")
def team(team_db, tmp_path_factory):
    index = render_dashboard(team_db, tmp_path_factory.mktemp("teamdash"))
    return index, index.read_text(encoding="utf-8")


def _between(html: str, start: str, end: str) -> str:
    return html.split(start, 1)[1].split(end, 1)[0]


def _cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)


def test_the_page_opens_with_what_the_newest_release_changed(team):
    _, html = team
    main = html.split("<main>", 1)[1]
    assert main.startswith('<h2 id="changes">What changed in onnxruntime 1.21.1')
    assert "against 1.21.0 and earlier" in main.split("</h2>", 1)[0]
    rows = re.findall(r'<tr class="change" data-change="([^"]+)">(.*?)</tr>', main, re.DOTALL)
    found = [(kind, re.sub("<[^>]+>", "", _cells(row)[1]), _cells(row)[2]) for kind, row in rows]
    assert found == [("new bug", "resnet18", "k1-lab-01"), ("new regression", "yolov8n", "k1-lab-01"),
                     ("still broken", "squeezenet1_1", "k1-lab-01"), ("recovered", "mobilenet_v2", "k1-lab-01")]
    by_model = {m: _cells(row) for (_, m, _), (_, row) in zip(found, rows)}
    assert by_model["resnet18"][3] == "chip bug -10.4 pts"
    assert by_model["yolov8n"][3] == "INT8 +30%"
    assert by_model["mobilenet_v2"][3] == "ok" and "1.21.0: " in by_model["mobilenet_v2"][4]
    assert "chip bug" in by_model["mobilenet_v2"][4]
    assert "inception_v3 on k1-lab-02" in _between(main, 'id="unmeasured"', "</p>")


def test_board_health_shows_infrastructure_failures_and_quarantine(team):
    _, html = team
    table = _between(html, 'id="boards"', "</table>")
    rows = {b: _cells(row) for b, row in re.findall(r'<tr data-board="([^"]+)">(.*?)</tr>', table, re.DOTALL)}
    assert sorted(rows) == ["k1-lab-01", "k1-lab-02", "k1-lab-03", "qemu-rv64-debian-trixie-onnxruntime"]
    flaky = rows["k1-lab-03"]
    assert flaky[2] == "quarantined" and "INFRA" in flaky[4] and flaky[5] == "3" and flaky[6] == "yes"
    assert flaky[7] == "ssh: connection reset by peer (exit 3)"
    assert flaky[9] == "171 (3 infra)"
    healthy = rows["k1-lab-01"]
    assert healthy[2] == "ok" and "pass" in healthy[4] and healthy[5] == "0" and healthy[6] == "-"
    assert healthy[7] == "-"


def test_infra_runs_are_not_measurements(team):
    index, html = team
    assert "INFRA" not in _between(html, 'id="flagged"', "</table>")  # not a chip bug
    assert ">?<" not in _between(html, 'id="releases"', "</thead>")  # no release column for them
    page = (index.parent / "pages" / "s-resnet18-k1-lab-03-37a8eec1.html").read_text()
    infra_rows = re.findall(r'<tr class="infra" data-run="(\d+)">', page)
    assert len(infra_rows) == 3 and page.count(">INFRA</span>") == 3
    charts = _between(page, '<div class="charts">', "<h2>")
    assert charts.count("<svg") == 5
    assert not any(f"run {run} " in charts for run in infra_rows)  # no point, no tooltip


def test_matrix_per_board_with_the_newest_releases_as_columns(team):
    index, html = team
    groups = re.findall(r'<div class="card board-group" id="[^"]+" data-board="([^"]+)">(.*?)</div>', html,
                        re.DOTALL)
    assert [b for b, _ in groups] == ["k1-lab-01", "k1-lab-02", "k1-lab-03", "qemu-rv64-debian-trixie-onnxruntime"]
    group = groups[0][1]
    head = _between(group, "<thead>", "</thead>")
    heads = [re.sub("<[^>]+>", "", x) for x in re.findall(r"<th[^>]*>(.*?)</th>", head)]
    assert heads == ["model", "1.21.1", "1.21.0", "1.20.3", "1.20.2", "1.20.1", "1.20.0", "1.19.3", "1.19.2",
                     "older (6 releases)"]
    assert len(heads) == VISIBLE_RELEASES + 2
    rows = dict(re.findall(r'<tr><th class="model"><a href="[^"]+">([^<]+)</a></th>(.*?)</tr>', group, re.DOTALL))
    assert len(rows) == 12
    older = re.search(r'<td class="st-old" title="([^"]+)">([^<]+)</td>', rows["bert_tiny"]).groups()
    assert older == ("bug in 1.18.2", "6 releases: 1 bug")
    assert re.search(r'<td class="st-old" title="no bug, no regression">6 releases ok</td>', rows["ghostnet"])
    assert 'class="st-bug"' in rows["resnet18"].split("</td>")[0]
    for href in set(re.findall(r'<a href="(pages/[^"]+\.html)"', html)):
        assert (index.parent / href).is_file(), href


def test_one_small_page_per_model_and_board(team):
    index, html = team
    pages = sorted((index.parent / "pages").glob("s-*.html"))
    assert len(pages) == 12 * 4
    assert 'data-run="' not in html  # the index inlines no run
    assert max(p.stat().st_size for p in pages) < 200_000
    assert (index.parent / "pages" / "fingerprints.html").is_file()


def test_old_runs_are_aggregated_per_release(tmp_path):
    """One model on one board, 20 releases x 3 runs: the newest KEEP_RUNS runs one by one, the 20 older
    ones as release aggregates (a table row and a chart point each; the oldest release is split)."""
    db = tmp_path / "h.sqlite3"
    releases = [f"1.{10 + i}.0" for i in range(20)]
    record_plain(db, [(make_doc(runtime=v, seed=i * 3 + k, n=10), []) for i, v in enumerate(releases)
                      for k in range(3)])
    index = render_dashboard(db, tmp_path / "dash")
    page = next((index.parent / "pages").glob("s-*.html")).read_text()
    assert KEEP_RUNS == 40 and len(re.findall(r'data-run="(\d+)"', page)) == 40
    assert min(map(int, re.findall(r'data-run="(\d+)"', page))) == 21
    older = _between(page, "Older runs, per runtime release", "</table>")
    found = re.findall(r"<tr><td>(1\.\d+\.0)</td><td>#(\d+)-#(\d+)</td>", older)
    assert found[:2] == [("1.16.0", "19", "20"), ("1.15.0", "16", "18")] and found[-1] == ("1.10.0", "1", "3")
    assert len(found) == 7
    assert page.count(" x3</text>") >= 1  # aggregated points on the x axis ("1.10.0 x3")
    assert "3 runs with onnxruntime 1.10.0 (#1-#3)" in page


def test_a_measurement_after_quarantine_means_the_board_is_back(tmp_path):
    db = tmp_path / "h.sqlite3"
    runs = [(infra_doc("resnet18", "k1-lab-03", seed, quarantined=seed == 3), []) for seed in (1, 2, 3)]
    record_plain(db, runs)
    index = render_dashboard(db, tmp_path / "dash")
    row = _cells(_between(index.read_text(), '<tr data-board="k1-lab-03">', "</tr>"))
    assert row[2] == "quarantined" and row[5] == "3" and row[6] == "yes" and row[8] == "-"
    record_plain(db, [(make_doc(model="resnet18", board="k1-lab-03", seed=4), [])])
    row = _cells(_between(render_dashboard(db, tmp_path / "dash").read_text(), '<tr data-board="k1-lab-03">',
                          "</tr>"))
    assert row[2] == "ok" and row[5] == "0" and row[6] == "no" and row[7] == "-" and row[8].startswith("#4 (")
