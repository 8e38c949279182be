import json
import re

from typer.testing import CliRunner

from alignlab.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_unknown_experiment_suggests_closest(tmp_path, toy):
    r = invoke("run", "toy.regresion", "--out", str(tmp_path / "r"))
    assert r.exit_code == 2
    assert "Unknown experiment 'toy.regresion'" in r.output
    assert "Did you mean: toy.regression" in r.output


def test_unknown_set_key_lists_valid_keys(tmp_path, toy):
    r = invoke("run", "toy.regression", "--set", "learning_rate=1", "--out", str(tmp_path / "r"))
    assert r.exit_code == 2
    assert "Unknown config key 'learning_rate'" in r.output
    assert "lr" in r.output and "checkpoint_every" in r.output
    assert not (tmp_path / "r").exists()


def test_wrong_type_names_expected_type(tmp_path, toy):
    r = invoke("run", "toy.regression", "--set", "steps=many", "--out", str(tmp_path / "r"))
    assert r.exit_code == 2 and "expected int" in r.output


def test_bad_preset_and_device(tmp_path, toy):
    r = invoke("run", "toy.regression", "--preset", "huge", "--out", str(tmp_path / "r"))
    assert r.exit_code == 2 and "Valid presets: smoke, quick, paper" in r.output
    r = invoke("run", "toy.regression", "--device", "tpu", "--out", str(tmp_path / "r"))
    assert r.exit_code == 2 and "Valid devices" in r.output


def test_run_then_report(tmp_path, toy):
    r = invoke("run", "toy.regression", "--preset", "smoke", "--out", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    assert "converges" in r.output
    r2 = invoke("run", "toy.regression", "--preset", "smoke", "--out", str(tmp_path / "r"))
    assert r2.exit_code == 0 and "already finished" in r2.output
    rep = invoke("report", str(tmp_path / "r"), "--out", str(tmp_path / "rep"))
    assert rep.exit_code == 0, rep.output
    claims = json.loads((tmp_path / "rep" / "claims.json").read_text())
    assert claims[0]["system"] == "toy" and claims[0]["experiment"] == "toy.regression"
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "SGD drives the loss below 0.01" in html
    assert "converges" in (tmp_path / "rep" / "report.md").read_text()


def test_report_names_corrupt_and_partial_runs(tmp_path, toy):
    invoke("run", "toy.regression", "--preset", "smoke", "--out", str(tmp_path / "good"))
    invoke("run", "toy.regression", "--preset", "smoke", "--out", str(tmp_path / "bad"))
    (tmp_path / "bad" / "results.json").write_text('{"truncated": ')
    (tmp_path / "empty").mkdir()
    r = invoke(
        "report",
        str(tmp_path / "good"),
        str(tmp_path / "bad"),
        str(tmp_path / "empty"),
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "rep"),
    )
    assert r.exit_code == 2
    assert "bad: corrupt run" in r.output
    assert "empty: not an alignlab run directory" in r.output
    assert "no such run directory" in r.output
    # the good run is still reported
    assert len(json.loads((tmp_path / "rep" / "claims.json").read_text())) == 1


def test_list_shows_experiments(toy):
    r = invoke("list")
    assert r.exit_code == 0 and "toy.regression" in r.output


def test_sweep_cli_local(tmp_path, toy):
    r = invoke(
        "sweep",
        "toy.regression",
        "--seeds",
        "0-1",
        "--preset",
        "smoke",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "sw"),
    )
    assert r.exit_code == 0, r.output
    assert "final_loss" in r.output
    assert (tmp_path / "sw" / "aggregate.json").exists()


def test_report_survives_malformed_run_files(tmp_path, toy):
    names = ["runjson_list", "runjson_null", "bad_yaml", "yaml_list", "holds_str", "good"]
    for n in names:
        assert (
            invoke(
                "run", "toy.regression", "--preset", "smoke", "--out", str(tmp_path / n)
            ).exit_code
            == 0
        )
    (tmp_path / "runjson_list" / "run.json").write_text("[]")
    (tmp_path / "runjson_null" / "run.json").write_text("null")
    (tmp_path / "bad_yaml" / "config.yaml").write_text("experiment: [unclosed\n")
    (tmp_path / "yaml_list" / "config.yaml").write_text("- a\n- b\n")
    claims = json.loads((tmp_path / "holds_str" / "claims.json").read_text())
    claims[0]["holds"] = "no"
    (tmp_path / "holds_str" / "claims.json").write_text(json.dumps(claims))
    r = invoke("report", *[str(tmp_path / n) for n in names], "--out", str(tmp_path / "rep"))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for n in names[:-1]:
        assert f"{n}:" in r.output, n
    assert len(json.loads((tmp_path / "rep" / "claims.json").read_text())) == 1
    # the same folders given to `run` are refused with a clear error, not a crash
    r = invoke("run", "toy.regression", "--preset", "smoke", "--out", str(tmp_path / "yaml_list"))
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_report_with_no_readable_run_writes_nothing(tmp_path, toy):
    r = invoke("report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "rep"))
    assert r.exit_code == 2 and "No report written" in r.output
    assert not (tmp_path / "rep").exists()


def test_sweep_markdown_on_stdout_is_not_wrapped(tmp_path, toy):
    r = invoke(
        "sweep",
        "toy.regression",
        "--seeds",
        "0",
        "--preset",
        "smoke",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "sw"),
    )
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if line.startswith("| converges")]
    assert len(rows) == 1 and rows[0].endswith("|")


def test_reproduce_leaves_out_work_in_progress_systems(tmp_path, toy, monkeypatch):
    import dataclasses

    from alignlab.core import experiment as registry

    wip = dataclasses.replace(toy.TOY, name="wipsys.demo", wip=True)
    monkeypatch.setattr(registry, "_REGISTRY", {**registry._REGISTRY, "wipsys.demo": wip})
    r = invoke("reproduce", "--preset", "smoke", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert "left out (work in progress" in r.output and "wipsys" in r.output
    exps = {c["experiment"] for c in json.loads((tmp_path / "claims.json").read_text())}
    assert "toy.regression" in exps and "wipsys.demo" not in exps
    r = invoke("reproduce", "--preset", "smoke", "--only", "wipsys", "--out", str(tmp_path / "w"))
    assert r.exit_code == 0, r.output
    assert re.search(r"wipsys\.demo\s+\(work", invoke("list").output)
