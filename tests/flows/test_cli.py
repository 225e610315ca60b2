"""``cutswap run``, the front door: bad input ends before Prefect or Dask start, with one line and exit 2;
a run's console holds each event once and names the run's log file, which holds everything."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """These tests start their own processes: no shared temporary Prefect API (it takes ~15 s)."""
    yield


def _cutswap(tmp_path: Path, *args: str, importtime: bool = False, timeout: float = 60):
    """``cutswap ARGS`` (the console script's module) in a fresh process, with its wall time."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}
    env["TORCH_HOME"] = str(tmp_path / "torch")  # no cached ImageNet weights, as on a fresh machine
    for name in [n for n in env if n == "CI" or n.startswith("DASK_DISTRIBUTED__LOGGING")]:
        env.pop(name)  # (a local cluster of an earlier test sets its workers' level here too)
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "flows.cli", *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - start


def _imported(stderr: str) -> set[str]:
    """The modules ``-X importtime`` says the process imported."""
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", stderr, re.M)}


@pytest.fixture
def preset(tmp_path, tiny_preset) -> Path:
    from cutswap.data.builtin.textures import build_textures

    data = build_textures(tmp_path / "data", seed=1, image_size=64, n_train=6, n_test_good=3, n_test_defect=1)
    dataset = {"name": "mvtec", "root": str(data), "categories": ["brick"], "image_size": 48}
    return tiny_preset(tmp_path, "tiny", dataset, parallel={"workers": 0})


def _closed_port() -> int:
    with socket.socket() as probe:  # free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _latin1_preset(tmp_path: Path) -> list[str]:
    (tmp_path / "latin1.yaml").write_bytes("run: d\xe9mo\n".encode("latin-1"))
    return ["--preset", str(tmp_path / "latin1.yaml")]


def _symlink_loop(tmp_path: Path) -> list[str]:
    # The case: a folder-layout dataset whose normal/loop points back to normal/.
    from PIL import Image

    root = tmp_path / "parts"
    for folder, n in (("normal", 6), ("abnormal", 2)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(root / folder / f"{i}.png")
    (root / "normal" / "loop").symlink_to("../normal", target_is_directory=True)
    return ["--set", "dataset.name=folder", "--set", f"dataset.root={root}"]


def _undecodable_name(tmp_path: Path) -> list[str]:
    from cutswap.data.builtin.textures import build_textures

    data = build_textures(
        tmp_path / "names", seed=1, image_size=64, n_train=2, n_test_good=1, n_test_defect=1
    )
    good = data / "brick/train/good"
    os.rename(next(good.glob("*.png")), os.fsencode(good) + b"/caf\xe9.png")
    return ["--set", f"dataset.root={data}"]


#: Every bad input of the front door: (arguments, or a builder of them from tmp_path; the line it prints).
BAD_INPUTS = {
    "setting": (["--set", "train.stepz=5"], "train.stepz: unknown setting; did you mean train.steps?"),
    "dataset-path": (
        ["--set", "dataset.root=/no/such/folder"],
        "/no/such/folder: dataset root does not exist",
    ),
    "stage": (["--stages", "trian"], "unknown stage(s) ['trian']"),
    "lr-nan": (["--set", "train.lr=.nan"], "train.lr: Input should be a finite number (got nan)"),
    "lr-inf": (["--set", "train.lr=.inf"], "train.lr: Input should be a finite number"),
    "lr-negative": (["--set", "train.lr=-0.1"], "train.lr: Input should be greater than 0"),
    "momentum-nan": (["--set", "train.momentum=.nan"], "train.momentum: Input should be a finite number"),
    "seeds-empty": (["--set", "train.seeds=[]"], "train.seeds: List should have at least 1 item"),
    "seeds-repeated": (["--set", "train.seeds=[0,0]"], "train.seeds: each entry must appear once"),
    "methods-empty": (["--set", "train.methods=[]"], "train.methods: List should have at least 1 item"),
    "head-dims-zero": (["--set", "train.head_dims=[0]"], "train.head_dims.0: Input should be greater than"),
    "device": (["--set", "train.device=banana"], "train.device: 'banana' is not a device"),
    "steps-bool": (["--set", "train.steps=true"], "train.steps: Input should be a valid integer (got True)"),
    "patch-too-large": (["--set", "evaluate.patch_size=128"], "evaluate.patch_size 128 is larger than"),
    "sigma-inf": (["--set", "evaluate.sigma=.inf"], "evaluate.sigma: Input should be a finite number"),
    "target-class": (["--set", "saliency.target_class=5000"], "saliency.target_class: Input should be less"),
    "address-malformed": (["--set", "parallel.address=banana"], "'banana' is not a scheduler address"),
    "address-silent": (
        lambda _: ["--set", f"parallel.address=tcp://127.0.0.1:{_closed_port()}"],
        "no scheduler answers",
    ),
    "storage-unknown-scheme": (["--set", "storage_root=ftp://host/cutswap"], "unknown scheme ftp://"),
    "storage-memory-with-workers": (
        ["--set", "storage_root=memory://run", "--set", "parallel.workers=2"],
        "lives in this process's memory",
    ),
    "storage-unwritable": (
        ["--set", "storage_root=/proc/cutswap"],
        "storage_root /proc/cutswap: cannot write",
    ),
    "weights-not-at-hand": (
        ["--set", "train.methods=[cutswap, imagenet-gde]"],
        "train.baseline_trunk needs ResNet-18's ImageNet weights",
    ),
    "variant-unknown-method": (
        ["--set", "variants.v={method: cutswapp, set: {cluster.method: kmeans}}"],
        "variants.v: unknown method 'cutswapp'; did you mean cutswap?",
    ),
    "variant-unknown-setting": (
        ["--set", "variants.v={method: cutswap, set: {cluster.methd: kmeans}}"],
        "variants.v: unknown setting cluster.methd; did you mean cluster.method?",
    ),
    "variant-setting-not-feeding": (
        ["--set", "variants.v={method: cutpaste, set: {saliency.levels: [level4]}}"],
        "variants.v: saliency.levels does not feed cutpaste",
    ),
    "variant-name-collides": (
        ["--set", "variants.cutpaste={method: cutswap, set: {cluster.method: kmeans}}"],
        "variants.cutpaste: the name is taken by a method; rename the variant",
    ),
    "variant-trains-nothing": (
        ["--set", "variants.v={method: patchcore, set: {evaluate.sigma: 1.0}}"],
        "variants.v: patchcore trains nothing, so it has no variants",
    ),
    "variant-weights-not-at-hand": (
        ["--set", "variants.v={method: cutswap, set: {saliency.backbone: resnet18}}"],
        "variants.v: saliency.backbone needs ResNet-18's ImageNet weights",
    ),
    "preset-not-utf8": (_latin1_preset, "is not UTF-8 text (byte 6); save it as UTF-8"),
    "built-in-root-mistyped": (
        ["--set", "dataset.name=textures", "--set", "dataset.root=/tmp/cutswap-no-such/textrues"],
        "dataset.root /tmp/cutswap-no-such/textrues does not exist",
    ),
    "tracker-not-answering": (
        ["--set", "tracking.mlflow_uri=http://127.0.0.1:9"],
        "tracking.mlflow_uri http://127.0.0.1:9: no MLflow server answers at http://127.0.0.1:9/health",
    ),
    "tracker-uri": (["--set", "tracking.mlflow_uri=ftp://host"], "'ftp://host' is not a tracking URI"),
    "symlink-loop": (_symlink_loop, "symlink loop"),
    "file-name-not-utf8": (_undecodable_name, "file name is not UTF-8"),
}


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_exits_2_with_one_line_before_prefect_or_dask_start(tmp_path, preset, args, message):
    args = args(tmp_path) if callable(args) else args
    done, seconds = _cutswap(tmp_path, "run", "--preset", str(preset), *args, importtime=True)
    print(
        f"cutswap run {' '.join(args)}: exit {done.returncode} in {seconds:.2f} s wall (with -X importtime)"
    )
    imported = _imported(done.stderr)
    assert "cutswap.pipeline.settings" in imported  # the check sees imports at all
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    # A setting's error comes before the dataset is read: nothing of pandas or scipy either.
    unused = ("prefect", "distributed", "torch") + (("pandas", "scipy") if "settings" in errors[0] else ())
    assert not {m for m in imported if m.split(".")[0] in unused}, errors[0]
    assert done.returncode == 2, done.stderr[-2000:]
    # One line; a dataset's problems come as one headline and one "  - " line per problem found.
    assert errors[0].startswith("error: ") and all(line.startswith("  - ") for line in errors[1:]), errors
    assert message in "\n".join(errors)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "prefect").exists(), "Prefect made its home: it was started"


def test_a_bucket_whose_endpoint_does_not_answer_is_one_line_within_seconds(tmp_path, preset, monkeypatch):
    """The issue's case: ``storage_root=s3://...`` with an endpoint nobody listens on. Credentials and the
    endpoint come from the environment, as they would for a user."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    args = ["--set", "storage_root=s3://nowhere/cutswap"]
    done, seconds = _cutswap(tmp_path, "run", "--preset", str(preset), *args, importtime=True)
    print(f"cutswap run {' '.join(args)}: exit {done.returncode} in {seconds:.2f} s wall")
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith("error: storage_root s3://nowhere/cutswap (endpoint http://127.0.0.1:")
    assert "cannot write there" in errors[0] and "AWS_ENDPOINT_URL" in errors[0]
    assert seconds < 10
    imported = _imported(done.stderr)
    assert not {m for m in imported if m.split(".")[0] in ("prefect", "distributed", "torch")}


@pytest.mark.parametrize(
    ("args", "code"), [(["--help"], 0), (["--set", "train.stepz=5"], 2)], ids=["help", "typo"]
)
def test_python_m_flows_benchmark_answers_before_importing_prefect(tmp_path, preset, args, code):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    command = [sys.executable, "-X", "importtime", "-m", "flows.benchmark", "--preset", str(preset), *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    print(
        f"python -m flows.benchmark {' '.join(args)}: exit {done.returncode} "
        f"in {time.perf_counter() - start:.2f} s"
    )
    assert done.returncode == code, done.stderr[-2000:]
    imported = _imported(done.stderr)
    assert "flows.launch" in imported
    unused = ("prefect", "distributed", "torch", "scipy", "pandas")
    assert not {m for m in imported if m.split(".")[0] in unused}


@pytest.mark.parametrize("args", [["--help"], ["gc", "--help"], ["show", "--help"], ["gc"]])
def test_the_commands_parse_without_pandas_scipy_or_torch(tmp_path, args):
    done, _ = _cutswap(tmp_path, *args, importtime=True)
    assert done.returncode == (0 if "--help" in args else 2), done.stderr[-2000:]
    imported = _imported(done.stderr)
    assert "cutswap.app.cli" in imported
    assert not {m for m in imported if m.split(".")[0] in ("pandas", "scipy", "torch", "prefect", "numpy")}


def test_debug_shows_the_traceback(tmp_path, preset):
    done, _ = _cutswap(tmp_path, "run", "--preset", str(preset), "--set", "train.stepz=5", "--debug")
    assert done.returncode == 2
    assert "Traceback" in done.stderr and "did you mean train.steps?" in done.stderr


def test_help_lists_every_command_with_an_example(capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "runs", "show", "open"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), command
        assert re.search(rf"^\s+cutswap {command}\b", out, re.M), f"no example of {command}"


@pytest.mark.slow
def test_a_run_says_each_event_once_and_logs_everything_to_its_file(tmp_path, preset):
    """A tiny run on a one-worker Dask cluster, as the console script runs it (stdout not a terminal)."""
    done, seconds = _cutswap(
        tmp_path, "run", "--preset", str(preset), "--set", "parallel.workers=1", timeout=600
    )
    console = done.stdout + done.stderr
    print(f"{len(console.splitlines())} console lines in {seconds:.0f} s:\n{console}")
    assert done.returncode == 0, console[-3000:]
    log = tmp_path / "reports" / "tiny" / "run.log"
    assert str(log) in done.stderr.splitlines()[0]  # the first line names the log file
    assert f"Full log: {log}" in done.stdout
    assert "UserWarning" not in console and "Traceback" not in console
    events = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in done.stderr.splitlines() if line.strip()]
    assert [e for e, n in Counter(events).items() if n > 1] == []
    assert not [e for e in events if "distributed." in e or "Finished in state" in e]
    assert not [e for e in events if re.search(r"step \d+/\d+ loss", e)]  # the progress display has them
    jobs = [e for e in events if re.match(r"\[\d+/6 jobs.*: (computed in|reused)", e)]  # one per finished job
    assert len(jobs) == 6 and jobs[-1].startswith("[6/6 jobs")
    # The file holds what the console leaves out: Dask's own lines, every training step, the engine's.
    text = log.read_text()
    assert re.search(r"INFO +distributed\.scheduler", text)
    assert "Registering Worker plugin cutswap-logs" in text
    assert re.search(r"train brick/cutswap/seed 0|step 2/2 loss", text) and "Finished in state" in text
    assert not list((tmp_path / "reports").glob(".*"))  # the log moved beside the report; nothing hidden left
