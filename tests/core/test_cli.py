import json
import re

from typer.testing import CliRunner

from alignlab.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), terminal_width=200)


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


def _only_toy_systems(monkeypatch, toy):
    """A registry holding the toy and a work-in-progress copy of it, nothing else."""
    import dataclasses

    from alignlab.core import experiment as registry

    wip = dataclasses.replace(toy.TOY, name="wipsys.demo", wip=True)
    monkeypatch.setattr(registry, "_REGISTRY", {"toy.regression": toy.TOY, "wipsys.demo": wip})
    monkeypatch.setattr(registry, "load_systems", lambda *a, **k: None)


def test_reproduce_leaves_out_work_in_progress_and_the_report_names_it(tmp_path, toy, monkeypatch):
    _only_toy_systems(monkeypatch, toy)
    r = invoke("reproduce", "--preset", "smoke", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert "left out (work in progress" in r.output and "wipsys" in r.output
    exps = {c["experiment"] for c in json.loads((tmp_path / "claims.json").read_text())}
    assert exps == {"toy.regression"}
    md = (tmp_path / "report.md").read_text()
    headline = md.splitlines()[2]
    assert "1/1 claims hold in the 1 experiments run" in headline
    assert "1 experiments were not run" in headline and "wipsys.demo (never run here)" in headline
    assert "| wipsys | — | wipsys.demo (never run here) |" in md
    assert "wipsys.demo" in (tmp_path / "report.html").read_text()

    # once a run of it exists in the output folder, the report shows its last measured claims
    r = invoke("reproduce", "--preset", "smoke", "--only", "wipsys", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert "toy.regression (last measured 1/1)" in (tmp_path / "report.md").read_text()
    r = invoke("reproduce", "--preset", "smoke", "--out", str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "wipsys.demo (last measured 1/1)" in md.splitlines()[2]
    section = md.split("## Not run in this reproduction", 1)[1]
    assert "last measured" in section and "| converges |" in section
    assert re.search(r"wipsys\.demo\s+\(work", invoke("list").output)


def test_show_prints_every_field_per_preset_with_constraint_and_help():
    r = invoke("show", "drmdp.recommender")
    assert r.exit_code == 0, r.output
    for text in ("horizon", "steps H of a recommendation episode", ">= 1", "smoke", "paper"):
        assert text in r.output, text
    assert "real_time_manipulates" in r.output  # the claims are listed
    r = invoke("show", "drmdp.recomender")
    assert r.exit_code == 2 and "Did you mean: drmdp.recommender" in r.output


def test_threads_and_workers_are_checked_and_do_not_change_a_runs_identity(tmp_path, toy):
    out = str(tmp_path / "r")
    r = invoke("run", "toy.regression", "--preset", "smoke", "--out", out, "--threads", "1")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r" / "run.json").read_text())["threads"] == 1
    r = invoke("run", "toy.regression", "--preset", "smoke", "--out", out, "--threads", "2",
               "--workers", "2")  # fmt: skip
    assert r.exit_code == 0 and "already finished" in " ".join(r.output.split())  # reused
    r = invoke("run", "toy.regression", "--preset", "smoke", "--out", str(tmp_path / "x"),
               "--threads", "0")  # fmt: skip
    assert r.exit_code == 2 and "--threads must be a positive integer" in r.output
    assert not (tmp_path / "x").exists()
