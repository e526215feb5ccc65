"""The dashboard written from a test database: the index (release report) and the model/board pages:
content, links, escaping, no network assets."""
import re

import pytest
from xqhil.dashboard import render_dashboard
from xqhil.history import HistoryError, RunStore


@pytest.fixture
def page(history_db, tmp_path):
    index = render_dashboard(history_db, tmp_path / "dash")
    return index, index.read_text(encoding="utf-8")


def _key_pages(index) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted((index.parent / "pages").glob("s-*.html")))


def test_every_run_is_on_its_model_page(page):
    index, _ = page
    assert sorted(set(map(int, re.findall(r'data-run="(\d+)"', _key_pages(index))))) == list(range(1, 8))


def test_one_page_per_model_and_board_with_charts(page):
    index, _ = page
    html = _key_pages(index)
    sections = re.findall(r'<section class="card" id="([^"]+)"', html)
    assert len(sections) == 2
    assert sorted(p.name for p in (index.parent / "pages").glob("s-*.html")) == [f"{s}.html" for s in sorted(sections)]
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
    """Models as rows (one table per board), releases as columns, newest first."""
    _, html = page
    matrix = html.split('id="releases"')[1]
    heads = re.findall(r"<th>([^<]+)</th>", matrix.split("<thead>")[1].split("</thead>")[0])
    assert heads == ["1.22.1", "1.22.0", "1.21.0", "1.20.1"]
    rows = dict(re.findall(r'<tr><th class="model"><a href="pages/[^"]+">([^<]+)</a></th>(.*?)</tr>', matrix))
    assert list(rows) == ["mobilenet_v2", "resnet&lt;8&gt;"]  # boards k1-lab-01, then qemu-rv64
    cells = re.findall(r'<td class="(st-[a-z]+)"[^>]*>([^<]*)</td>', rows["mobilenet_v2"])
    assert cells[0] == ("st-ok", "ok") and cells[3] == ("st-ok", "ok")
    assert cells[2][0] == "st-regression" and re.fullmatch(r"INT8 \+2\d%", cells[2][1])
    assert cells[1][0] == "st-bug" and re.fullmatch(r"chip bug -1\d\.\d pts, SNR -2\d dB", cells[1][1])
    qemu = re.findall(r'<td class="(st-[a-z]+)"', rows["resnet&lt;8&gt;"])
    assert qemu == ["st-none", "st-none", "st-ok", "st-none"]


def test_what_changed_in_the_newest_release(page):
    _, html = page
    changes = html.split('id="changes"')[1].split('id="boards"')[0]
    assert "What changed in onnxruntime 1.22.1" in changes and "against 1.22.0 and earlier" in changes
    rows = re.findall(r'<tr class="change" data-change="([^"]+)">(.*?)</tr>', changes)
    assert [kind for kind, _ in rows] == ["recovered"] and "mobilenet_v2" in rows[0][1]
    assert "1.22.0: " in rows[0][1] and "chip bug" in rows[0][1]
    assert "resnet&lt;8&gt; on qemu-rv64" in changes.split('id="unmeasured"')[1]


def test_device_fingerprints_table(page, history_db):
    index, _ = page
    html = (index.parent / "pages" / "fingerprints.html").read_text()
    with RunStore.open(history_db) as store:
        from xqhil.history.doc import fingerprint
        ids = {fingerprint(r.doc)["id"] for r in store.list()}
    table = html.split('id="fingerprints"')[1]
    assert all(i in table for i in ids)
    assert "SpacemiT X60" in table and "CPUExecutionProvider" in table


def test_strings_are_escaped(page):
    index, html = page
    for text in (html, _key_pages(index)):
        assert "resnet&lt;8&gt;" in text and "resnet<8>" not in text


def test_self_contained_without_network(page):
    index, _ = page
    for path in index.parent.rglob("*.html"):
        html = path.read_text()
        assert "http://" not in html and "https://" not in html and "//cdn" not in html
        assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)=', html)
        assert "<style>" in html and "<script>" in html


def test_missing_report_is_marked(history_db, tmp_path):
    (tmp_path / "runs" / "2" / "verify.md").unlink()
    index = render_dashboard(history_db, tmp_path / "dash")
    assert re.search(r'<a href="../../runs/2/verify.md" class="missing"', _key_pages(index))
    assert '<a href="../../runs/1/verify.md">md</a>' in _key_pages(index)


def test_empty_database_renders_a_page(tmp_path):
    RunStore.open(tmp_path / "empty.sqlite3").close()
    html = render_dashboard(tmp_path / "empty.sqlite3", tmp_path / "dash").read_text()
    assert "No runs recorded yet" in html and "nothing flagged" in html


def test_rewrite_is_atomic_and_leaves_no_temporary_files(history_db, tmp_path):
    out = tmp_path / "dash"
    render_dashboard(history_db, out)
    (out / "pages" / "s-gone-model-board-12345678.html").write_text("a page of an earlier render")
    render_dashboard(history_db, out)
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "pages"]
    assert sorted(p.name for p in (out / "pages").iterdir()) == [
        "fingerprints.html", "s-mobilenet-v2-k1-lab-01-37a8eec1.html", "s-resnet-8--qemu-rv64-37a8eec1.html"]


def test_missing_database_is_an_error(tmp_path):
    with pytest.raises(HistoryError) as info:
        render_dashboard(tmp_path / "nope.sqlite3", tmp_path / "dash")
    assert info.value.exit_code == 2 and not (tmp_path / "dash").exists()


def test_release_labels_on_the_x_axis_never_overlap_and_shading_alternates():
    """60 releases on one chart (older releases aggregated on a long history): labels that would overlap
    are left out, and the release bands alternate (the old code shaded every band alike)."""
    from xqhil.dashboard import svg

    groups = [f"1.{i}.0" for i in range(60)]
    chart = svg.line_chart("t", "ms", [str(i) for i in range(60)], groups,
                           [svg.Series("a", [1.0] * 60, "#000")], tips=[""] * 60)
    xs = [float(x) for x in re.findall(r'<text class="group" x="([\d.]+)"', chart)]
    assert 5 < len(xs) < 60
    assert all(b - a >= 6.5 * 6 for a, b in zip(xs, xs[1:]))  # "1.10.0": 6 characters
    assert chart.count('class="band-a"') == chart.count('class="band-b"') == 30
