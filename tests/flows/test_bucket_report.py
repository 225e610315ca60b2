"""A run under a bucket reports_root (the S3 server process): its log and the runs index go to the bucket
with the report, the index lists every run in the bucket whichever host made it, and the Prefect
artifacts link addresses a browser opens (the server's https-or-http form), not this host's files."""

from __future__ import annotations

import re
import urllib.request

import pytest

from cutswap.data.builtin.textures import build_textures

pytestmark = pytest.mark.slow


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (the test's own server)
        return answer.read()


def test_a_bucket_run_uploads_its_log_and_the_runs_index_and_links_the_bucket(
    tmp_path, tiny_preset, bucket, s3_server, monkeypatch
):
    import boto3
    from prefect.artifacts import Artifact

    from cutswap import roots
    from flows.benchmark import cutswap

    data = build_textures(tmp_path / "data", seed=1, image_size=64, n_train=6, n_test_good=3, n_test_defect=1)
    dataset = {"name": "mvtec", "root": str(data), "categories": ["brick"], "image_size": 48}
    preset = tiny_preset(tmp_path, "tiny", dataset, parallel={"workers": 0})
    reports = f"{bucket}/reports"
    overrides = {"storage_root": f"{bucket}/storage", "reports_root": reports}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "host-a"))
    cutswap(str(preset), overrides=overrides)

    log = roots.read_bytes(roots.join(reports, "tiny", "run.log"))
    assert log is not None and b"run tiny: full log in" in log and b"report tiny: computed" in log
    assert b">tiny<" in roots.read_bytes(roots.join(reports, "index.html"))

    figures = Artifact.get("cutswap-tiny-figures").data
    links = re.findall(r"\]\(([^)]+)\)", figures)
    bucket_name = bucket.removeprefix("s3://").split("/")[0]
    assert links and all(
        link.startswith(f"{s3_server.endpoint}/{bucket_name}/cutswap/reports/tiny/figures/") for link in links
    ), figures
    # The address names the object itself: it opens with no credential in it once the bucket's owner
    # lets the reader in (here, the figures and the page made public-read, as a team bucket behind a
    # VPN or a static-site bucket is).
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint)
    for key in [link.split(f"/{bucket_name}/", 1)[1] for link in links] + ["cutswap/reports/tiny/index.html"]:
        s3.put_object_acl(Bucket=bucket_name, Key=key, ACL="public-read")
    assert _get(links[0]).startswith(b"\x89PNG")
    page = re.findall(r"\]\(([^)]+)\)", Artifact.get("cutswap-tiny-page").data)[-1]
    assert page == f"{s3_server.endpoint}/{bucket_name}/cutswap/reports/tiny/index.html"
    assert b"tiny" in _get(page)

    # Another host (its own cache folder) runs another run into the same bucket: the index it uploads
    # lists both, though this host's folder never held the first.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "host-b"))
    cutswap(str(preset), overrides={**overrides, "run": "other"})
    index = roots.read_bytes(roots.join(reports, "index.html")).decode()
    assert ">tiny<" in index and ">other<" in index
