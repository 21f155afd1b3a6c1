"""The other marks of physical_features: the body size measured from known boxes, marks recorded (and
undone) as corrections on the deer page, the antler and mark parts kept apart, bad values refused in
one line, and the demo hunter's records."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from deer_reid_assets.core.marks import body_size, features, records, vocabulary
from deer_reid_assets.core.marks.body_size import Box, SizeSettings
from deer_reid_assets.core.review import actions
from deer_reid_assets.core.store import antler_annotations
from deer_reid_assets.demo.individuals import _make_individuals
from deer_reid_assets.demo.marks import throat_class, true_marks, write_hunter_marks
from deer_reid_assets.demo.synthetic import SyntheticConfig
from deer_reid_assets.review_app.app import ReviewConfig, create_app
from deer_reid_assets_tests.review_seed import seed


def _boxes(camera: str, deer: str, factor: float, cls: str, slope: float = 0.5, n: int = 5) -> list[Box]:
    """``n`` boxes of a deer whose true height at a spot is ``factor`` x the camera's line ``slope * bottom``."""
    return [Box(f"{camera}-{deer}-{i}", camera, bottom, factor * slope * bottom, cls, deer, True)
            for i, bottom in enumerate(range(200, 200 + 40 * n, 40))]


def test_body_size_from_known_boxes_is_relative_to_the_camera_and_the_sex():
    # two cameras with different perspective (lens, height); four bucks (antlers make bucks' boxes taller)
    # and three does; each deer seen at both cameras, at spots from near to far
    sizes = {"b-small": 0.97, "b-mid1": 1.08, "b-mid2": 1.10, "b-large": 1.22, "d-small": 0.78, "d-mid": 0.88,
             "d-large": 0.98}
    boxes = [b for cam, slope in (("cam1", 0.5), ("cam2", 0.8)) for deer, f in sizes.items()
             for b in _boxes(cam, deer, f, "buck" if deer.startswith("b") else "doe", slope)]
    sexes = {d: "buck" if d.startswith("b") else "doe" for d in sizes}
    rel = body_size.relative_heights(boxes)
    mean = sum(sizes.values()) / len(sizes)
    assert rel["cam1-b-large-0"] == pytest.approx(1.22 / mean, rel=1e-6)
    assert rel["cam2-d-small-3"] == pytest.approx(0.78 / mean, rel=1e-6)  # the same deer reads the same at both
    measured = body_size.measure(boxes, sexes)
    assert {d: m["class"] for d, m in measured.items()} == {
        "b-small": "small", "b-mid1": "medium", "b-mid2": "medium", "b-large": "large",
        "d-small": "small", "d-mid": "medium", "d-large": "large"}
    assert measured["b-large"]["versus_sex_median"] == pytest.approx(1.22 / 1.09, abs=1e-3)
    assert measured["b-large"]["detections"] == 10 and measured["b-large"]["cameras"] == 2
    assert measured["b-large"]["from"] == "reviewed detections" and "median of deer of its sex" in measured["b-large"]["method"]


def test_too_few_boxes_or_deer_fall_back_to_the_age_class_or_say_why_not():
    boxes = _boxes("cam1", "a", 1.0, "mature", n=3) + _boxes("cam1", "b", 1.1, "buck", n=3)
    measured = body_size.measure(boxes, {"a": "buck", "b": "buck"}, SizeSettings(min_peers=8))
    assert measured["a"]["class"] == "large" and measured["a"]["method"].startswith("age class mature")
    assert "b" not in measured  # no camera line (6 boxes < 8) and no age class: nothing to say
    measured = body_size.measure(boxes, {"a": "buck", "b": "buck"}, SizeSettings(min_peers=4, min_deer=3))
    assert measured["b"]["class"] is None and measured["b"]["method"].startswith("not classed: 2 measured buck deer")
    with pytest.raises(ValueError, match="margin"):
        SizeSettings(margin=1.5)


def test_a_bad_mark_value_is_a_one_line_error_naming_the_field():
    assert vocabulary.parse({"flank_left": "Scar", "throat_patch": "", "ear_notch_right": "not seen"}) == {
        "flank_left": "scar"}
    with pytest.raises(vocabulary.MarkError) as err:
        vocabulary.parse({"flank_left": "stripe"})
    assert str(err.value) == "flank_left: 'stripe' is not one of none, patch, spots, scar"
    with pytest.raises(vocabulary.MarkError, match=r"^x\.json: unknown mark 'tail'"):
        vocabulary.parse({"tail": "long"}, where="x.json")


def _physical(engine, deer_id: str) -> dict:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT physical_features FROM deer WHERE id::text = :d"), {"d": deer_id}).scalar()


def test_marks_and_antlers_each_keep_the_others_part_and_undo_restores_the_marks(engine, tmp_path):
    ids = seed(engine, tmp_path / "store")
    antlers = {"antlers": {"2026-27": {"total_points": 8, "description": "8-point typical"}}}
    with engine.begin() as conn:
        antler_annotations.write_deer_antlers(conn, [{"deer_id": ids["A"], "antler_points": 8,
                                                      "antler_description": "8-point", "physical_features": antlers}])
    first = records.record(engine, ids["A"], {"flank_left": "scar", "throat_patch": "large"}, reviewer="ann")
    pf = _physical(engine, ids["A"])
    assert pf["antlers"] == antlers["antlers"]
    assert pf["marks"]["flank_mark"] == {"left": "scar"} and pf["marks"]["throat_patch"] == "large"
    assert pf["marks"]["recorded_by"] == "ann" and pf["marks"]["method"] == features.RECORDED_METHOD
    # the measured body size (rebuilt by the asset) and the antlers (rebuilt by antler_features) keep the marks
    summary = features.rebuild(engine)
    assert summary["deer_with_marks"] == 1
    with engine.begin() as conn:
        antler_annotations.write_deer_antlers(conn, [{"deer_id": ids["A"], "antler_points": 9,
                                                      "antler_description": "9-point", "physical_features": antlers}])
    pf = _physical(engine, ids["A"])
    assert set(pf) == {"antlers", "marks", "body_size"} and pf["body_size"]["source"] == "measured"
    # a recorded body size overrides the measured one, which stays beside it
    records.record(engine, ids["A"], {"flank_left": "scar", "throat_patch": "large", "body_size": "small"},
                   reviewer="ann")
    size = _physical(engine, ids["A"])["body_size"]
    assert size["class"] == "small" and size["source"] == "recorded" and size["measured"] is not None
    assert records.record(engine, ids["A"], {"flank_left": "scar", "throat_patch": "large", "body_size": "small"},
                          reviewer="ann").record_id is None  # the same marks again: nothing recorded
    # u undoes the newest save, even when a queue decision came before it
    actions.apply_action(engine, ids["uncertain"], "skip", reviewer="ann")
    records.record(engine, ids["A"], {"flank_left": "spots"}, reviewer="ann")
    assert actions.undo_last(engine, "ann")["action"] == "marks"
    assert _physical(engine, ids["A"])["body_size"]["class"] == "small"
    assert actions.undo_last(engine, "ann")["action"] == "skip"
    # someone else's later save makes an earlier one not undoable
    records.record(engine, ids["A"], {"flank_right": "patch"}, reviewer="bob")
    with pytest.raises(actions.ReviewError, match="recorded again since \\(by bob\\); not undone"):
        actions.undo_last(engine, "ann")
    actions.undo_last(engine, "bob")
    assert actions.undo_last(engine, "ann")["action"] == "marks"  # the body-size save
    assert _physical(engine, ids["A"])["body_size"]["source"] == "measured"
    assert actions.undo_last(engine, "ann")["id"] == first.record_id
    pf = _physical(engine, ids["A"])
    assert "marks" not in pf and pf["antlers"] == antlers["antlers"] and pf["body_size"]["source"] == "measured"


def test_the_deer_page_form_records_shows_and_undoes_marks(engine, tmp_path):
    ids = seed(engine, tmp_path / "store")
    client = TestClient(create_app(ReviewConfig(engine=engine, store_root=tmp_path / "store", reviewer="web")))
    page = client.get(f"/deer/{ids['C']}")
    assert page.status_code == 200 and "nothing recorded" in page.text and 'id="marks-form"' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    form = {"csrf": csrf, "throat_patch": "medium", "flank_left": "", "flank_right": "spots",
            "ear_notch_left": "notched", "ear_notch_right": "none", "body_size": ""}
    assert client.post(f"/deer/{ids['C']}/marks", data={k: v for k, v in form.items() if k != "csrf"}).status_code == 403
    saved = client.post(f"/deer/{ids['C']}/marks", data=form)
    assert saved.url.path == f"/deer/{ids['C']}"
    assert "marks saved: throat patch medium, right flank spots, left ear notched, right ear none" in saved.text
    assert re.search(r'<option value="spots" selected>', saved.text) and "recorded by web" in saved.text
    assert _physical(engine, ids["C"])["marks"]["ear_notch"] == {"left": "notched", "right": "none"}
    bad = client.post(f"/deer/{ids['C']}/marks", data={**form, "flank_left": "stripe"})
    assert "flank_left: &#39;stripe&#39; is not one of none, patch, spots, scar" in bad.text
    back = client.post("/undo", data={"csrf": csrf, "back": f"/deer/{ids['C']}"})
    assert "undid the marks recorded" in back.text and "nothing recorded" in back.text
    assert "marks" not in (_physical(engine, ids["C"]) or {})


def test_a_file_of_records_imports_once_and_a_bad_entry_costs_only_itself(engine, tmp_path):
    ids = seed(engine, tmp_path / "store")
    path = tmp_path / "marks.json"
    path.write_text(json.dumps({"format": "deer-reid-marks/1", "reviewer": "Frank", "deer": [
        {"name": "A", "throat_patch": "small", "flank_right": "scar"},
        {"name": "B", "flank_left": "stripe"},
        {"name": "Nobody", "throat_patch": "large"},
        {"name": "C", "ear_notch_left": "notched"}]}))
    report = records.import_file(engine, path)
    assert (report.recorded, report.unchanged) == (2, 0)
    assert report.errors == [f"{path}: deer 'B': flank_left: 'stripe' is not one of none, patch, spots, scar",
                             f"{path}: deer 'Nobody': no deer of that name"]
    assert _physical(engine, ids["A"])["marks"]["source"] == "file marks.json"
    again = records.import_file(engine, path)
    assert (again.recorded, again.unchanged) == (0, 2)
    from click.testing import CliRunner

    from deer_reid_assets.cli import main

    env = {"DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    result = CliRunner().invoke(main, ["marks", "import", str(path)], env=env)
    assert result.exit_code == 0 and "0 deer recorded, 2 unchanged, 2 not used" in result.output
    assert "not used: " + f"{path}: deer 'Nobody': no deer of that name" in result.output
    (tmp_path / "bad.json").write_text("{not json")
    assert records.import_file(engine, tmp_path / "bad.json").errors[0].startswith(f"{tmp_path / 'bad.json'}: not readable")


def test_the_demo_hunter_records_only_the_sides_he_saw(tmp_path):
    individuals = _make_individuals(SyntheticConfig(n_bucks=2, n_does=1))
    path = write_hunter_marks(tmp_path, individuals, {0: {"left"}, 2: {"left", "right"}})
    doc = json.loads(path.read_text())
    assert doc["reviewer"] == "demo hunter" and [d["name"] for d in doc["deer"]] == ["Buck-01", "Doe-01"]
    buck, doe = doc["deer"]
    assert set(buck) == {"name", "throat_patch", "flank_left", "ear_notch_left"}
    assert {k: v for k, v in doe.items() if k != "name"} == true_marks(individuals[2])
    assert buck["flank_left"] == individuals[0].marks[0].kind
    assert vocabulary.parse({k: v for k, v in doe.items() if k != "name"})  # the vocabulary's values
    assert [throat_class(s) for s in (0.5, 0.9, 1.3)] == ["small", "medium", "large"]


def test_the_demo_prints_the_physical_features_line(capsys):
    from types import SimpleNamespace

    from deer_reid_assets.cli.summary import RunSummary

    values = {"marks_imported": "3 deer recorded, 0 unchanged, 0 not used (marks)", "deer_with_marks": 3,
              "body_size_measured": 2, "body_size_from_age_class": 1, "body_size_recorded": 0,
              "body_size_classes": {"small": 1, "medium": 1, "large": 1}}
    summary = RunSummary.from_metadata({"physical_features": {k: SimpleNamespace(value=v) for k, v in values.items()}})
    summary.echo_metrics()
    assert ("physical features: marks recorded for 3 deer (imported: 3 deer recorded, 0 unchanged, 0 not used (marks)); "
            "body size measured for 2 deer, from the age class for 1, recorded for 0 (1 small, 1 medium, 1 large)"
            ) in capsys.readouterr().out
    assert RunSummary.from_metadata({}).marks is None


def test_the_asset_imports_the_upload_folders_marks_and_writes_physical_features(engine, tmp_path):
    import dagster as dg

    from deer_reid_assets.defs.marks import physical_features
    from deer_reid_assets.defs.resources import DatabaseResource, ImageStoreResource

    ids = seed(engine, tmp_path / "store")
    uploads = tmp_path / "uploads"
    (uploads / "marks").mkdir(parents=True)
    (uploads / "marks" / "frank.json").write_text(json.dumps({"format": "deer-reid-marks/1", "reviewer": "Frank",
                                                              "deer": [{"name": "B", "ear_notch_left": "notched"},
                                                                       {"name": "C", "flank_left": "stripe"}]}))
    resources = {"database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
                 "image_store": ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads))}
    result = dg.materialize([physical_features], resources=resources,
                            run_config={"ops": {"physical_features": {"config": {"min_deer": 2}}}})
    meta = {k: v.value for k, v in result.asset_materializations_for_node("physical_features")[0].metadata.items()}
    assert meta["marks_imported"].startswith("1 deer recorded, 0 unchanged, 1 not used")
    assert "deer 'C': flank_left: 'stripe'" in meta["marks_not_used_first"]
    # 10 boxes of one size at one spot: every relative height is 1.0, both bucks medium against each other
    assert meta["detections_with_relative_height"] == 10 and meta["body_size_measured"] == 2
    assert meta["body_size_classes"] == {"small": 0, "medium": 2, "large": 0}
    pf = _physical(engine, ids["B"])
    assert pf["marks"]["ear_notch"] == {"left": "notched"} and pf["body_size"]["measured"]["relative_height"] == 1.0
    assert "min_deer" not in meta["body_size_method"] and ">= 2" in meta["body_size_method"]
