import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import profilers
from profilers._cli import main


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "profilers._cli", *args], capture_output=True, text=True)


def test_catalogue_lists_every_type_and_its_fields():
    res = _cli("catalogue")
    assert res.returncode == 0
    for m in profilers.ModuleType:
        assert f"{m}:" in res.stdout
    assert "kernel" in res.stdout and "one of 1, 3, 5, 7" in res.stdout and "utilization" in res.stdout


def test_bad_input_is_one_clear_line(tmp_path):
    res = _cli("torch", "--module", "conv3d", "--n", "2", "--out", str(tmp_path / "x.parquet"))
    assert res.returncode == 2
    assert "module='conv3d' is not a registered module type; known: conv2d" in res.stderr
    assert "Traceback" not in res.stderr
    res = _cli("torch", "--module", "conv2d", "--n", "2", "--range", "kernel=4", "--out", str(tmp_path / "x.parquet"))
    assert res.returncode == 2 and "conv2d.kernel=4 is not valid: expected one of 1, 3, 5, 7" in res.stderr
    res = _cli("torch", "--module", "linear", "--n", "2", "--range", "kernel=3", "--out", str(tmp_path / "x.parquet"))
    assert res.returncode == 2 and "no selected module has a field 'kernel'" in res.stderr
    res = _cli("torch", "--module", "add", "--n", "2", "--utilization", "0,1.5", "--out", str(tmp_path / "x.parquet"))
    assert res.returncode == 2 and "utilization=1.5 is out of range" in res.stderr
    res = _cli("summary", str(tmp_path / "missing.parquet"))
    assert res.returncode == 2 and "no such dataset file" in res.stderr


def test_summary_of_a_real_run(tmp_path, capsys):
    out = tmp_path / "s.parquet"
    assert main(["torch", "--module", "add", "--n", "2", "--min-run-time", "0.01", "--out", str(out), "--no-progress"]) == 0
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "schema v2, torch on cpu" in text and "add" in text


# -- conventions shared by both commands -------------------------------------------------------


def _all_parsers(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def _parsers():
    from jaxlat._cli import build_parser as jaxlat_parser
    from profilers._cli import build_parser as profile_parser

    return [*_all_parsers(jaxlat_parser()), *_all_parsers(profile_parser())]


def test_every_option_has_help_and_help_shows_defaults():
    for parser in _parsers():
        for action in parser._actions:
            if type(action).__name__ == "_SubParsersAction":  # the commands, each with its help
                continue
            assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"
    helps = {p.prog: " ".join(p.format_help().split()) for p in _parsers()}  # unwrapped
    assert "--epochs" in helps["jaxlat train"] and "(default: 0)" in helps["jaxlat train"]  # --seed
    assert "(default: median)" in helps["jaxlat train"]
    assert "(default: 0.9)" in helps["jaxlat transfer adapt"]  # --threshold
    assert "(default: 120.0)" in helps["jaxlat-profile torch"]  # --timeout
    assert "(default: the protocol's, 0.25 spread, 0.2 single)" in helps["jaxlat-profile torch"]  # --min-run-time
    assert "comma-separated or repeated (default: 1)" in helps["jaxlat-profile torch"]  # --threads
    assert "(default: None)" not in "".join(helps.values())


def test_version():
    import jaxlat

    for cmd in (["-m", "jaxlat._cli"], ["-m", "profilers._cli"]):
        res = subprocess.run([sys.executable, *cmd, "--version"], capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.strip().endswith(" " + jaxlat.__version__), res.stderr
    assert jaxlat.__version__ != "0+unknown"


def test_list_options_take_commas_and_repeats():
    from profilers._cli import build_parser

    args = build_parser().parse_args(["torch", "--module", "add", "--threads", "1,2", "--threads", "4", "--out", "x"])
    assert args.threads == [1, 2, 4] and args.utilization == [0.0] and args.batch == [1]


def test_predictors_lists_shipped_and_local(capsys):
    from jaxlat._cli import main as jaxlat_main
    from jaxlat._shipped import reference_path

    assert jaxlat_main(["predictors", "--dir", str(reference_path().parent)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cpu_torch_1t (default)\n") and "epyc_torch_1t" in out
    assert "torch on cpu: AMD EPYC; learns the p10" in out and "modules: activation, add" in out
    assert f"path: {reference_path('epyc_torch_1t')}" in out  # the same directory found as a local one
    assert jaxlat_main(["predictors", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["cpu_torch_1t", "epyc_torch_1t", "xeon_amx_torch_1t"]
    assert [r["statistic"] for r in rows] == ["median", "p10", "p10"]


@pytest.mark.parametrize("argv, message", [
    (["predict", "--arch", "missing.json"], "jaxlat: error: missing.json: no such architecture record file"),
    (["predict", "--arch", "{tmp}/m.onnx"], "jaxlat: error: --arch {tmp}/m.onnx: an ONNX model: give it as --onnx"),
    (["predict", "--onnx", "{tmp}/m.tflite"], ("jaxlat: error: --onnx {tmp}/m.tflite: a TFLite model, which jaxlat "
                                               "cannot read: give the model as ONNX (--onnx) or as a torch factory")),
    (["predict", "--model", "tests.test_models:small_cnn"], "jaxlat: error: --model needs --input-shape"),
    (["predict", "--model", "tests.test_models:nope", "--input-shape", "1,3,8,8"],
     "jaxlat: error: --model='tests.test_models:nope': 'tests.test_models' has no attribute 'nope'"),
    (["predict", "--arch", "{tmp}/r.json", "--predictor", "tpu_v9"],
     ("jaxlat: error: predictor 'tpu_v9' is neither a predictor directory nor a shipped predictor: shipped ones are "
      "cpu_torch_1t, epyc_torch_1t")),
    (["evaluate", "--predictor", "tpu_v9", "--data", "{tmp}/d.parquet"], "jaxlat: error: predictor 'tpu_v9'"),
    (["predictors", "--dir", "{tmp}/nowhere"], "jaxlat: error: {tmp}/nowhere: no such directory"),
    (["predict", "--arch", "{tmp}/bad.json"], "jaxlat: error: {tmp}/bad.json: not valid JSON"),
])
def test_user_errors_end_in_one_line_with_status_2(tmp_path, capsys, argv, message):
    from jaxlat._cli import main as jaxlat_main

    for name, text in (("m.onnx", ""), ("m.tflite", ""), ("d.parquet", ""), ("bad.json", "{"), ("r.json", "{}")):
        (tmp_path / name).write_text(text)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        status = jaxlat_main(argv)
    except SystemExit as e:  # argparse's own usage errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().splitlines()[-1].startswith(message.replace("{tmp}", str(tmp_path))), err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    from jaxlat._cli import main as jaxlat_main

    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        jaxlat_main(["predict", "--arch", str(tmp_path / "bad.json"), "--debug"])


# -- quiet output ------------------------------------------------------------------------------


def test_predict_from_a_torch_factory_in_one_step_prints_only_its_own_lines():
    cmd = [sys.executable, "-m", "jaxlat._cli", "predict", "--model", "tests.test_models:small_cnn",
           "--input-shape", "1,3,64,64", "--predictor", "cpu_torch_1t"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("small_cnn: ") and "80% interval" in res.stdout
    assert res.stderr == ""
    assert res.stdout.strip().endswith("; predictor cpu_torch_1t")
    res = subprocess.run(cmd[:-2], capture_output=True, text=True, timeout=300)  # the default predictor
    assert res.returncode == 0 and res.stderr == "" and res.stdout.startswith("small_cnn: ")
    res = subprocess.run([*cmd[:4], "-v", *cmd[4:]], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "predictor: cpu_torch_1t" in res.stderr


def test_capturing_a_transformers_model_is_quiet(tmp_path):
    """transformers imports torchao, whose import logs failed CUDA extensions and torch's pytree
    deprecations; a capture shows none of it (and `-v` shows it again)."""
    pytest.importorskip("transformers")
    cmd = [sys.executable, "-m", "profilers._cli", "zoo", "--model", "resnet18", "--no-measure"]
    res = subprocess.run([*cmd, "--out", str(tmp_path / "a.jsonl")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr
    assert res.stdout.strip() == f"captured 1 zoo models -> {tmp_path / 'a.jsonl'}"
    res = subprocess.run([*cmd, "-v", "--out", str(tmp_path / "b.jsonl")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "torchao" in res.stderr  # still there for whoever asks


def test_tflite_export_workers_are_quiet(tmp_path):
    """The conversion processes import torchao (through the converter), which logs "Failed to
    load" for its CUDA-only extensions, and run LiteRT, which prints its XNNPACK line: neither
    reaches the terminal; `-v` shows the third-party lines again, as in the main process."""
    import importlib.util

    if importlib.util.find_spec("litert_torch") is None:
        pytest.skip("needs litert-torch (the tflite extra)")
    cmd = [sys.executable, "-m", "profilers._cli", "tflite-export", "--module", "add", "--n", "1", "--no-progress"]
    res = subprocess.run([*cmd, "--models", str(tmp_path / "m")], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [f"exporting 1 configs to {tmp_path / 'm'}"], res.stderr
    assert "1 exported, 0 failed" in res.stdout
    res = subprocess.run([*cmd, "-v", "--models", str(tmp_path / "v")], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0 and "Failed to load" in res.stderr


# -- every input path: one line naming the argument or file, status 2 --------------------------


def _status(run, argv, capsys):
    """`run(argv)`'s exit status (argparse's usage errors included) and its stderr."""
    try:
        status = run(argv)
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def _one_error(run, argv, capsys, *expected):
    status, err = _status(run, argv, capsys)
    assert status == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    for text in expected:
        assert text in last, err
    return last


def _record_file(path):
    """A small CNN's architecture record, saved at `path`."""
    import torch

    from .test_models import small_cnn

    profilers.capture_torch(small_cnn(), (torch.randn(1, 3, 8, 8),), name="cnn").save(path)
    return path


@pytest.mark.parametrize("argv, expected", [
    (["torch", "--module", "add", "--n", "abc"], "--n='abc' is not valid: expected a whole number >= 1"),
    (["torch", "--module", "add", "--n", "0"], "--n=0 is not valid: expected a whole number >= 1"),
    (["torch", "--module", "add", "--n", "add=x"], "--n add='x' is not valid: expected a whole number >= 1"),
    (["torch", "--module", "add", "--n", "2", "--n", "conv2d=3"],
     "--n conv2d=3: conv2d is not among the module types to profile (add)"),
    (["torch", "--from-archs", "{tmp}/r.json", "--n", "abc"], "--n='abc' is not valid"),
    (["torch", "--from-archs", "{tmp}/r.json", "--n", "conv2d=3"], "with --from-archs, --n takes one count N"),
    (["torch", "--module", "conv2d", "--n", "2", "--range", "cin=abc"], "--range 'cin=abc': cin: 'abc'"),
    (["torch", "--module", "add", "--n", "2", "--plugin", "no_such_plugin_xyz"],
     "--plugin 'no_such_plugin_xyz': cannot import it (No module named 'no_such_plugin_xyz')"),
    (["torch", "--module", "conv2d", "--n", "2", "--family", "nope"],
     "--family 'nope' is not valid: the sampling families of conv2d are"),
    (["tflite-run", "--models", "{tmp}", "--n", "0"], "--n=0 is not valid"),
    (["generated", "--n", "0", "--no-measure"], "--n=0 is not valid"),
    (["zoo", "--model", "resnet18", "--batch", "0", "--no-measure"], "batch size 0 is not valid (--batch)"),
    (["generated", "--n", "1", "--utilization", "3", "--no-measure"], "utilization=3.0 is not valid (--utilization)"),
    (["tflite-export", "--module", "add", "--n", "1", "--models", "{tmp}/r.json"], "r.json' is a file: expected a models"),
    (["torch-model", "--model", "tests.test_models:small_cnn", "--input-shape", "1,3,8,8", "--threads", "0",
      "--no-measure"], "--threads=0 is not valid"),
    (["torch-model", "--model", "tests.test_models:small_cnn", "--input-shape", "1,3,8,8", "--input-dtype", "int64",
      "--vocab", "0", "--no-measure"], "--vocab=0 is not valid"),
])
def test_profile_arguments_are_refused_in_one_line(argv, expected, tmp_path, capsys):
    _record_file(tmp_path / "r.json")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = ["--out", str(tmp_path / ("o.parquet" if argv[0] in ("torch", "tflite-run") else "o.jsonl"))]
    if argv[0] == "torch-model":
        out = ["--out", str(tmp_path / "o.json")]
    if argv[0] == "tflite-export":
        out = ["--no-progress"]
    _one_error(main, [*argv, *out], capsys, "jaxlat-profile: error: ", expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # nothing written


def test_torch_model_checks_its_output_before_capturing(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    model = ["torch-model", "--model", "tests.test_models:small_cnn", "--input-shape", "1,3,8,8", "--no-measure"]
    _one_error(main, [*model, "--out", str(tmp_path / "r.txt")], capsys,
               "--out='", "r.txt' is not valid: expected a record file, .json (one batch size) or .jsonl")
    _one_error(main, [*model, "--out", str(tmp_path / "afile" / "r.json")], capsys,
               "--out ", "afile is a file, not a directory")
    # An input the model cannot take: torch.export fails, the user's model named, no traceback.
    _one_error(main, [*model[:4], "1,3,8", "--no-measure", "--out", str(tmp_path / "r.json")], capsys,
               "--model tests.test_models:small_cnn: small_cnn: torch.export failed: RuntimeError")
    _one_error(main, ["generated", "--n", "1", "--no-measure", "--out", str(tmp_path / "afile" / "g.jsonl")], capsys,
               "--out=", "afile is a file, not a directory")
    _one_error(main, ["torch", "--module", "add", "--n", "2", "--out", str(tmp_path / "afile" / "d.parquet")], capsys,
               f"--out {tmp_path / 'afile' / 'd.parquet'}: {tmp_path / 'afile'} is a file, not a directory")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A dataset of two module types (synthetic latencies), one of a third type, one with one
    row per type (undefined r2), and a ridge predictor trained on the first by the command."""
    from jaxlat._cli import main as jaxlat_main

    from .helpers import synthetic_rows

    d = tmp_path_factory.mktemp("data")
    meta = {"backend": "torch", "device": "cpu", "device_id": "synthetic", "runs": []}
    profilers.write_dataset(d / "train.parquet", synthetic_rows(["add", "conv2d"], 8), meta)
    profilers.write_dataset(d / "matmul.parquet", synthetic_rows(["matmul"], 3), meta)
    profilers.write_dataset(d / "one.parquet", synthetic_rows(["add", "conv2d"], 1, seed=5), meta)
    assert jaxlat_main(["train", "--data", str(d / "train.parquet"), "--regressor", "ridge",
                        "--out", str(d / "pred"), "-q"]) == 0
    return d


def test_train_refuses_epochs_0_and_bad_outputs_before_training(small_data, tmp_path, capsys, monkeypatch):
    """`--epochs 0` used to mean the default; `--out` on a file, under a file or in an unwritable
    place failed only when the trained predictor was saved."""
    import jaxlat._predictor
    from jaxlat._cli import main as jaxlat_main

    def no_training(*a, **k):
        raise AssertionError("trained although the arguments are wrong")

    monkeypatch.setattr(jaxlat._predictor, "train_predictor", no_training)
    (tmp_path / "afile").write_text("x")
    data = ["train", "--data", str(small_data / "train.parquet"), "--regressor", "ridge"]
    for argv, expected in [
        ([*data, "--epochs", "0", "--out", str(tmp_path / "p")], ["--epochs=0 is not valid: expected an int >= 1"]),
        ([*data, "--epochs", "-2", "--out", str(tmp_path / "p")], ["--epochs=-2"]),
        ([*data, "--out", str(tmp_path / "afile")], [f"--out {tmp_path / 'afile'}: is an existing file"]),
        ([*data, "--out", str(tmp_path / "afile" / "p")], [f"--out {tmp_path / 'afile' / 'p'}: cannot write here"]),
        ([*data, "--regressor", "conv3d=mlp", "--out", str(tmp_path / "p")],
         ["--regressor conv3d=mlp: module='conv3d' is not a registered module type"]),
        ([*data, "--regressor", "linear=mlp", "--out", str(tmp_path / "p")],
         ["--regressor linear=mlp: the data has no linear rows (its module types: add, conv2d)"]),
        ([*data, "--regressor", "mlp", "--out", str(tmp_path / "p")],
         ["--regressor: two regressors for every module type, ridge and mlp"]),
        (["train", "--data", str(small_data / "train.parquet"), "--select", "accuracy", "--max-query-us", "0",
          "--out", str(tmp_path / "p")], ["--max-query-us=0.0 is not valid: expected a finite number > 0"]),
        ([*data, "--max-bytes", "0", "--out", str(tmp_path / "p")], ["need --select"]),
        ([*data, "--members", "0", "--out", str(tmp_path / "p")], ["--members=0 is not valid: expected an int >= 1"]),
        ([*data, "--bins", "-1", "--out", str(tmp_path / "p")], ["--bins=-1 is not valid: expected an int >= 0"]),
    ]:
        _one_error(jaxlat_main, argv, capsys, "jaxlat: error: ", *expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no predictor directory left behind
    if Path("/proc/self").is_dir():  # a place nobody can write, even root
        _one_error(jaxlat_main, [*data, "--out", "/proc/jaxlat-p"], capsys, "--out /proc/jaxlat-p: cannot write here")


def test_train_members_saves_an_ensemble_that_reloads(small_data, tmp_path):
    from jaxlat import LatencyPredictor
    from jaxlat._cli import main as jaxlat_main

    out = tmp_path / "ens"
    assert jaxlat_main(["train", "--data", str(small_data / "train.parquet"), "--regressor", "mlp", "--members", "2",
                        "--epochs", "3", "--edge", "log_cin,log_cout", "--clip-inputs", "--bins", "0", "--out", str(out),
                        "-q"]) == 0
    pred = LatencyPredictor.load(out)
    m = pred.models["conv2d"]
    assert m.regressor.config["recipe"]["bins"] == 0
    assert m.regressor.config["members"] == 2 and m.params["layers"][0]["w"].shape[0] == 2
    assert tuple(m.regressor.config["recipe"]["edge"]) == ("log_cin", "log_cout")
    assert m.regressor.config["recipe"]["clip"] is True and "x_min" in m.params
    assert np.isfinite(pred.predict(profilers.read_dataset(small_data / "train.parquet"))["latency_ms"]).all()


def test_train_refuses_an_edge_feature_no_type_has(small_data, tmp_path, capsys):
    from jaxlat._cli import main as jaxlat_main

    _one_error(jaxlat_main, ["train", "--data", str(small_data / "train.parquet"), "--regressor", "mlp",
                             "--edge", "log_cinn", "--out", str(tmp_path / "p")], capsys,
               "jaxlat: error: ", "recipe edge: ['log_cinn'] are not features of add, conv2d: expected some of")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(("flag", "saved"), [([], "all"), (["--edge", "none"], ())])
def test_train_edge_default_all_and_none(small_data, tmp_path, flag, saved):
    from jaxlat import LatencyPredictor
    from jaxlat._cli import main as jaxlat_main

    out = tmp_path / "p"
    assert jaxlat_main(["train", "--data", str(small_data / "train.parquet"), "--regressor", "mlp", "--epochs", "3",
                        *flag, "--out", str(out), "-q"]) == 0
    assert LatencyPredictor.load(out).models["conv2d"].regressor.config["recipe"]["edge"] == saved


def test_evaluate_names_both_type_sets_and_writes_valid_json(small_data, capsys):
    from jaxlat._cli import main as jaxlat_main

    pred = str(small_data / "pred")
    _one_error(jaxlat_main, ["evaluate", "--predictor", pred, "--data", str(small_data / "matmul.parquet")], capsys,
               "jaxlat: error: --data ", "the data has matmul; predictor ", "predicts add, conv2d")
    # One row per type: r2 and the rank correlations are undefined, null in JSON (not a bare NaN).
    argv = ["evaluate", "--predictor", pred, "--data", str(small_data / "one.parquet"), "--json",
            "--plot", str(small_data / "one.png")]
    assert jaxlat_main(argv) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out
    metrics = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))["metrics"]
    assert metrics["add"]["r2"] is None and metrics["all"]["n"] == 2
    _one_error(jaxlat_main, [*argv[:-1], str(small_data / "train.parquet" / "x.png")], capsys,
               "--plot ", "is a file, not a directory")
    _one_error(jaxlat_main, [*argv[:-1], str(small_data)], capsys, "--plot ", "is a directory; expected a file path")


def test_evaluate_notes_the_types_it_skips(small_data, tmp_path, capsys):
    from jaxlat._cli import main as jaxlat_main

    argv = ["evaluate", "--predictor", str(small_data / "pred"), "--data",
            f"{small_data / 'train.parquet'},{small_data / 'matmul.parquet'}", "--plot", str(tmp_path / "p.png")]
    assert jaxlat_main(argv) == 0
    assert "3 rows of matmul not evaluated" in capsys.readouterr().err


def test_predict_json_has_no_bare_nan_and_breakdown_is_checked(tmp_path, capsys):
    from jaxlat._cli import main as jaxlat_main

    _record_file(tmp_path / "r.json")
    assert jaxlat_main(["predict", "--arch", str(tmp_path / "r.json"), "--json", "--breakdown", "2"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert rows[0]["measured_ms"] is None and rows[0]["latency_ms"] > 0 and rows[0]["breakdown"]
    _one_error(jaxlat_main, ["predict", "--arch", str(tmp_path / "r.json"), "--breakdown", "0"], capsys,
               "--breakdown=0 is not valid: expected an int >= 1")


@pytest.mark.parametrize("factory, kwargs, expected", [
    ("os:system", None, "--model='os:system': calling the factory with no arguments failed: TypeError"),
    ("builtins:dict", None, "--model='builtins:dict': the factory returned a builtins.dict, not a torch.nn.Module"),
    ("tests.test_models:small_cnn", "[1]", "--kwargs='[1]' is a JSON list: expected an object"),
    ("tests.test_models:small_cnn", "{oops", "--kwargs='{oops' is not valid JSON"),
    ("tests.test_models:small_cnn", '{"nope": 1}', "small_cnn() got an unexpected keyword argument 'nope'"),
])
def test_factories_that_do_not_build_a_module_are_named(factory, kwargs, expected, tmp_path, capsys):
    from jaxlat._cli import main as jaxlat_main

    more = [] if kwargs is None else ["--kwargs", kwargs]
    _one_error(jaxlat_main, ["predict", "--model", factory, "--input-shape", "1,3,8,8", *more], capsys,
               "jaxlat: error: ", expected)
    _one_error(main, ["torch-model", "--model", factory, "--input-shape", "1,3,8,8", "--no-measure", *more,
                      "--out", str(tmp_path / "r.json")], capsys, "jaxlat-profile: error: ", expected)
    assert not (tmp_path / "r.json").exists()


def test_transfer_tables_are_checked_naming_the_file(tmp_path, capsys):
    """Duplicate, conflicting, NaN, non-positive, non-numeric and absurd latencies, an empty
    file, an unknown architecture: one line naming the option and the file, nothing written."""
    import pandas as pd

    from jaxlat._cli import main as jaxlat_main
    from profilers.spaces import NB201

    codes = [NB201.encode(NB201.random_arch(s)) for s in range(12)]
    pd.DataFrame({"arch": codes, "latency_ms": np.linspace(1, 2, 12)}).to_csv(tmp_path / "proxy.csv", index=False)
    pd.DataFrame({"arch": codes[6:]}).to_csv(tmp_path / "want.csv", index=False)
    tables = {
        "dup.csv": ({"arch": codes[:3] * 2, "latency_ms": [1, 2, 3] * 2}, "3 architecture(s) appear more than once"),
        "conflict.csv": ({"arch": codes[:3] * 2, "latency_ms": [1, 2, 3, 4, 5, 6]}, "with conflicting latencies"),
        "nan.csv": ({"arch": codes[:4], "latency_ms": [1, None, 2, 3]}, f"1 latencies are NaN, infinite or <= 0 ({codes[1]!r}"),
        "neg.csv": ({"arch": codes[:4], "latency_ms": [1, -1, 2, 3]}, "NaN, infinite or <= 0"),
        "text.csv": ({"arch": codes[:4], "latency_ms": [1, "abc", 2, 3]}, "1 latencies are not numbers"),
        "huge.csv": ({"arch": codes[:4], "latency_ms": [1, 1e30, 2, 3]}, "1 latencies above 3.6e+06 ms"),
        "nocol.csv": ({"arch": codes[:4], "ms": [1, 2, 3, 4]}, "missing columns ['latency_ms']"),
        "bad_arch.csv": ({"arch": ["garbage", *codes[1:4]], "latency_ms": [1, 2, 3, 4]}, "'garbage'"),
    }
    for name, (cols, _) in tables.items():
        pd.DataFrame(cols).to_csv(tmp_path / name, index=False)
    (tmp_path / "empty.csv").write_text("")
    tables["empty.csv"] = (None, "not a CSV table")
    base = ["transfer", "adapt", "--space", "nb201", "--predict", str(tmp_path / "want.csv"), "--out",
            str(tmp_path / "out.csv")]
    for name, (_, expected) in tables.items():
        _one_error(jaxlat_main, [*base, "--samples", str(tmp_path / name), "--proxy-table", str(tmp_path / "proxy.csv")],
                   capsys, f"jaxlat: error: --samples {tmp_path / name}", expected)
        _one_error(jaxlat_main, [*base, "--samples", str(tmp_path / "proxy.csv"), "--proxy-table", str(tmp_path / name)],
                   capsys, f"jaxlat: error: --proxy-table {tmp_path / name}" if name != "bad_arch.csv" else "")
    _one_error(jaxlat_main, [*base, "--samples", str(tmp_path / "proxy.csv"), "--proxy-table",
                             str(tmp_path / "missing.csv")], capsys, f"--proxy-table {tmp_path / 'missing.csv'}: no such file")
    (tmp_path / "empty.txt").write_text("\n")
    _one_error(jaxlat_main, [*base[:4], "--predict", str(tmp_path / "empty.txt"), *base[6:], "--samples",
                             str(tmp_path / "proxy.csv"), "--proxy-table", str(tmp_path / "proxy.csv")], capsys,
               f"--predict {tmp_path / 'empty.txt'}: no architectures")
    _one_error(jaxlat_main, [*base[:-1], str(tmp_path), "--samples", str(tmp_path / "proxy.csv"), "--proxy-table",
                             str(tmp_path / "proxy.csv")], capsys, f"--out {tmp_path}: is a directory")
    assert not (tmp_path / "out.csv").exists()
    (tmp_path / "afile").write_text("x")
    _one_error(jaxlat_main, [*base[:-1], str(tmp_path / "afile" / "out.csv"), "--samples", str(tmp_path / "proxy.csv"),
                             "--proxy-table", str(tmp_path / "proxy.csv")], capsys, "--out ", "is a file, not a directory")


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # the undefined correlation itself
def test_transfer_adapt_report_is_valid_json(tmp_path, capsys):
    """A proxy whose latencies are all equal has no rank correlation (NaN): null in the report."""
    import pandas as pd

    from jaxlat._cli import main as jaxlat_main
    from profilers.spaces import NB201

    codes = [NB201.encode(NB201.random_arch(s)) for s in range(12)]
    pd.DataFrame({"arch": codes, "latency_ms": 1.0}).to_csv(tmp_path / "proxy.csv", index=False)
    pd.DataFrame({"arch": codes[:6], "latency_ms": np.linspace(1, 2, 6)}).to_csv(tmp_path / "k.csv", index=False)
    pd.DataFrame({"arch": codes[6:]}).to_csv(tmp_path / "want.csv", index=False)
    assert jaxlat_main(["transfer", "adapt", "--space", "nb201", "--samples", str(tmp_path / "k.csv"), "--proxy-table",
                        str(tmp_path / "proxy.csv"), "--predict", str(tmp_path / "want.csv"), "--out",
                        str(tmp_path / "sub" / "out.csv")]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert report["spearman"]["proxy"] is None and report["k"] == 6
    assert len(pd.read_csv(tmp_path / "sub" / "out.csv")) == 6
