"""What users read and run of the settings: the shipped presets (``configs/*.yaml``) load, mean what they
say, and say how to point at a dataset on disk; ``docs/method.md`` states every setting's real default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cutswap.errors import SettingsError
from cutswap.pipeline.run_dataset import resolve_dataset
from cutswap.pipeline.settings import Settings, load_settings
from cutswap.report.tables import reference_table

CONFIGS = Path(__file__).parents[3] / "configs"
DOCS = Path(__file__).parents[3] / "docs"
PRESETS = sorted(CONFIGS.glob("*.yaml"))
#: Datasets the project builds itself; every other preset needs ``dataset.root``.
EMBEDDED = ("textures", "mnist")


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every value a YAML mapping sets, by dotted name (``train.momentum``), lists kept whole."""
    if not isinstance(node, dict):
        return [(prefix, node)]
    return [leaf for key, value in node.items() for leaf in _leaves(value, f"{prefix}{key}.")]


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.rstrip(".").split("."):
        data = data[part]
    return data


def test_the_documented_presets_ship():
    # The README and the docs name these four; a rename would leave them pointing at nothing.
    assert {p.stem for p in PRESETS} >= {"demo", "mnist", "mvtec-ad", "visa"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_a_shipped_preset_loads_and_keeps_every_value_it_writes(path: Path):
    # Unknown keys already fail the load (every section forbids extras). This also catches a value that
    # loads but not as written: a YAML scalar read as a string or a boolean and coerced by pydantic, or a
    # validator that rewrites it. The JSON dump turns tuples into lists and paths into strings, as YAML has.
    settings = load_settings(path)
    dumped = settings.model_dump(mode="json")
    written = yaml.safe_load(path.read_text())
    for name, variant in written.pop("variants", {}).items():  # its ``set`` keys are dotted themselves
        assert dumped["variants"][name] == {"control": None, **variant}, f"{path.name}: variants.{name}"
    for dotted, value in _leaves(written):
        assert _lookup(dumped, dotted) == value, f"{path.name}: {dotted.rstrip('.')}"


def test_each_preset_reports_under_its_own_name():
    # ``run`` names the report folder: two presets with one name would overwrite each other's report.
    runs = {path.stem: load_settings(path).run for path in PRESETS}
    assert all(run == stem for stem, run in runs.items()), runs


def test_the_mvtec_preset_runs_every_category_of_the_published_table():
    # The report shows CutPaste's published figures beside ours; a category missing from the preset (or
    # misspelt) would silently drop out of that comparison.
    settings = load_settings(CONFIGS / "mvtec-ad.yaml")
    published = set(reference_table("mvtec").index) - {"mean"}
    assert set(settings.dataset.categories) == published


@pytest.mark.parametrize(
    "path",
    [p for p in PRESETS if load_settings(p).dataset.name not in EMBEDDED],
    ids=lambda p: p.stem,
)
def test_a_preset_for_data_on_disk_asks_for_the_dataset_root(path: Path, tmp_path: Path):
    settings = load_settings(path, {"storage_root": str(tmp_path)})
    assert settings.dataset.root is None  # shipped without a machine's path
    with pytest.raises(SettingsError, match=r"dataset\.root is not set.*--set dataset\.root="):
        resolve_dataset(settings)


#: The sections whose every setting ``docs/method.md`` explains (the rest say where files and workers are).
METHOD_SECTIONS = ("saliency", "cluster", "pairs", "train", "evaluate", "report")
#: A knob row of the docs' tables: ``| `section.name` | `default` | meaning |``.
KNOB_ROW = re.compile(r"^\| `(?P<name>[a-z_]+\.[a-z0-9_]+)` \| `(?P<default>[^`]*)` \|", re.MULTILINE)


def test_the_method_doc_states_every_setting_with_its_real_default():
    # The doc is where a reader learns what a knob does and what it is unless set; a default changed in
    # settings.py, or a new setting, must show up there too.
    rows = {m["name"]: m["default"] for m in KNOB_ROW.finditer((DOCS / "method.md").read_text())}
    defaults = Settings().model_dump(mode="json")
    expected = {f"{s}.{k}" for s in METHOD_SECTIONS for k in defaults[s]}
    assert expected <= set(rows), sorted(expected - set(rows))
    for name, default in rows.items():
        assert yaml.safe_load(default) == _lookup(defaults, name), name


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_method_doc_links_and_the_code_citing_it_resolve():
    # Modules move (the doc links to them) and headings get renamed (docstrings cite them by anchor).
    text = (DOCS / "method.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    for target in re.findall(r"\]\(([^)]+)\)", text):
        path, _, anchor = target.partition("#")
        if path:
            assert (DOCS / path).exists(), target
        else:
            assert anchor in anchors, target
    root = DOCS.parent
    cited = [
        (source, anchor)
        for source in [*(root / "cutswap").rglob("*.py"), root / "README.md"]
        for anchor in re.findall(r"docs/method\.md#([\w-]+)", source.read_text())
    ]
    assert cited, "the code cites the doc's sections by anchor"
    for source, anchor in cited:
        assert anchor in anchors, f"{source.relative_to(root)} cites a missing section: #{anchor}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.stepz": 5}, "train.stepz: unknown setting; did you mean train.steps?"),
        ({"trian.steps": 5}, "trian: unknown setting; did you mean train?"),
        ({"dataset.image_sise": 64}, "dataset.image_sise: unknown setting; did you mean dataset.image_size?"),
        ({"train.zzz": 1}, "train.zzz: unknown setting; the section train has methods, seeds, steps,"),
    ],
)
def test_an_unknown_key_gets_a_did_you_mean(overrides, message):
    with pytest.raises(SettingsError) as raised:
        load_settings(CONFIGS / "demo.yaml", overrides)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.lr": ".nan"}, "train.lr: Input should be a finite number (got nan)"),
        ({"train.lr": "nan"}, "train.lr: Input should be a valid number (got 'nan')"),
        ({"train.lr": ".inf"}, "train.lr: Input should be a finite number"),
        ({"train.lr": "-0.1"}, "train.lr: Input should be greater than 0"),
        ({"train.momentum": ".nan"}, "train.momentum: Input should be a finite number"),
        ({"train.momentum": "1.5"}, "train.momentum: Input should be less than 1"),
        ({"train.seeds": "[]"}, "train.seeds: List should have at least 1 item"),
        ({"train.seeds": "[0, 0]"}, "train.seeds: each entry must appear once; repeated: 0"),
        ({"train.seeds": "[-1]"}, "train.seeds.0: Input should be greater than or equal to 0"),
        ({"train.methods": "[]"}, "train.methods: List should have at least 1 item"),
        ({"train.methods": "[cutswap, cutswap]"}, "repeated: cutswap"),
        ({"train.head_dims": "[0]"}, "train.head_dims.0: Input should be greater than or equal to 1"),
        ({"train.device": "banana"}, "train.device: 'banana' is not a device; give auto, cpu, cuda"),
        ({"train.steps": "true"}, "train.steps: Input should be a valid integer (got True)"),
        ({"train.pretrained": "1"}, "train.pretrained: Input should be a valid boolean (got 1)"),
        ({"evaluate.sigma": ".inf"}, "evaluate.sigma: Input should be a finite number"),
        ({"evaluate.patch_size": 128}, "evaluate.patch_size 128 is larger than dataset.image_size 64"),
        ({"saliency.target_class": 5000}, "saliency.target_class: Input should be less than 1000"),
        ({"parallel.address": "banana"}, "parallel.address: 'banana' is not a scheduler address"),
        ({"pairs.area": "[0.1, .inf]"}, "pairs.area.1: Input should be a finite number"),
        ({"dataset.categories": "[]"}, "dataset.categories: List should have at least 1 item"),
        (
            {"train.freeze_steps": 5},
            "train.freeze_steps fine-tune an ImageNet trunk; set train.pretrained: true",
        ),
        ({"train.trunk_bn": "eval"}, "train.trunk_bn fine-tune an ImageNet trunk"),
        (
            {"train.pretrained": "true", "train.trunk": "efficientnet_lite0", "train.freeze_steps": 40},
            "train.freeze_steps 40 must be below train.steps 40",
        ),
        (
            {"train.pretrained": "true", "train.freeze_steps": 5, "train.nproc": 2},
            "train.freeze_steps with train.nproc > 1 is not supported",
        ),
        ({"train.trunk_lr_factor": 0}, "train.trunk_lr_factor: Input should be greater than 0"),
        ({"evaluate.coreset_fraction": 0}, "evaluate.coreset_fraction: Input should be greater than 0"),
        ({"report.equivalence_margin": 0}, "report.equivalence_margin: Input should be greater than 0"),
        ({"run": "compare"}, "run 'compare' is the reports' folder of run comparisons; choose another name"),
        (
            {"report.confirmatory": "[{a: cutswap, b: randomswap}]"},
            "report.confirmatory[0] names 'randomswap', which is neither a method nor a variant of this run",
        ),
        (
            {"report.confirmatory": "[{a: cutswap, b: random-swap, metric: image_auroc}]"},
            "report.confirmatory.0.metric: Input should be 'image_AUROC'",
        ),
        ({"storage_root": "ftp://host/cutswap"}, "storage_root: 'ftp://host/cutswap': unknown scheme ftp://"),
        ({"storage_root": "s3://"}, "storage_root: 's3://' names no bucket; give s3://BUCKET/PREFIX"),
        ({"storage_root": "memory://x"}, "storage_root memory://x lives in this process's memory"),
        (
            {"storage_root": "memory://x", "parallel.workers": 0, "parallel.address": "tcp://10.0.0.5:8786"},
            "storage_root memory://x lives in this process's memory",
        ),
        (
            {"storage_root": "storage", "parallel.address": "tcp://10.0.0.5:8786"},
            "storage_root 'storage' is relative, which each host of parallel.address would read from its own",
        ),
    ],
)
def test_a_value_that_would_fail_in_a_worker_is_refused_in_one_line(overrides, message):
    with pytest.raises(SettingsError) as raised:
        load_settings(CONFIGS / "demo.yaml", overrides)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"train.weight_decay": "3e-5"}, lambda s: s.train.weight_decay == 3e-5),
        ({"train.lr": "1"}, lambda s: s.train.lr == 1.0),  # an int where a float is declared
        (
            {"parallel.address": "tcp://10.0.0.5:8786", "storage_root": "/srv/cutswap"},
            lambda s: s.parallel.address.endswith(":8786"),
        ),
        (
            {"parallel.address": "[::1]:8786", "storage_root": "/srv/cutswap"},
            lambda s: s.parallel.address == "[::1]:8786",
        ),
        ({"train.device": "cuda:1"}, lambda s: s.train.device == "cuda:1"),
        ({"storage_root": "/tmp/x"}, lambda s: s.storage_root == "/tmp/x"),
        ({"storage_root": "S3://bucket/cutswap/"}, lambda s: s.storage_root == "s3://bucket/cutswap"),
        ({"reports_root": "file:///tmp/r"}, lambda s: s.reports_root == "file:///tmp/r"),
        (
            {"storage_root": "gs://b/p", "parallel.address": "tcp://10.0.0.5:8786"},
            lambda s: s.storage_root == "gs://b/p",
        ),
        ({"storage_root": "memory://x", "parallel.workers": 0}, lambda s: s.storage_root == "memory://x"),
    ],
)
def test_values_a_user_means_are_read_as_meant(overrides, check):
    assert check(load_settings(CONFIGS / "demo.yaml", overrides))


def test_a_confirmatory_metric_is_one_the_report_compares():
    from cutswap.pipeline.settings import REPORT_METRICS
    from cutswap.report.compare import CONFIRMATORY_DEFAULT, METRICS

    assert REPORT_METRICS == METRICS
    assert [(q.a, q.b, q.metric) for q in Settings().report.confirmatory] == list(CONFIRMATORY_DEFAULT)


def test_settings_survive_their_json_round_trip():
    # Flows receive settings as JSON parameters: strict types must not refuse their own dump.
    settings = load_settings(CONFIGS / "demo.yaml", {"pairs.area": "[0.05, 0.2]"})
    assert Settings.model_validate_json(settings.model_dump_json()) == settings


def test_a_preset_that_is_not_utf8_is_named(tmp_path: Path):
    preset = tmp_path / "latin1.yaml"
    preset.write_bytes("run: d\xe9mo\n".encode("latin-1"))
    with pytest.raises(SettingsError, match=r"latin1\.yaml is not UTF-8 text \(byte 6\); save it as UTF-8"):
        load_settings(preset)
