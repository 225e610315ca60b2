"""``cutswap gc ROOT`` against a real S3 server process: what it lists, what ``--yes`` deletes, and that
no live attempt or referenced generation is touched while writers and a reader work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cutswap import roots
from cutswap.pipeline.stores import build_store, open_store, write_array

REPO = Path(__file__).resolve().parents[3]

_KILLED_BEFORE_COMMIT = """
import os, signal, sys
import numpy as np
from cutswap.pipeline.stores import build_store, objects, write_array
objects._commit = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # uploaded, never committed
build_store(sys.argv[1], "cluster", "dead", {}, {}, lambda g: write_array(g, "x", np.arange(1000)))
"""


def _gc(root: str, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "gc", root, *options],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def _keys(s3_server, root: str) -> set[str]:
    return set(s3_server.keys(root))


def test_gc_lists_each_kind_of_garbage_with_its_size_and_deletes_it_only_when_asked(s3_server, monkeypatch):
    from cutswap.pipeline.stages.train import work_dir

    root = s3_server.bucket() + "/cutswap"
    live, _ = build_store(root, "ingest", "brick", {}, {}, lambda g: write_array(g, "x", np.arange(50)))
    # An attempt whose writer was killed before its commit, its heartbeat asking for 1 s.
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_COMMIT, root],
        env={**os.environ, "CUTSWAP_GC_STALE_SECONDS": "1"},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr
    # A generation superseded by a forced recompute whose writer kept superseded ones for no time.
    monkeypatch.setenv("CUTSWAP_KEEP_SUPERSEDED_HOURS", "0")
    for value in (1, 2):
        build_store(
            root, "cluster", "cat", {}, {}, lambda g, v=value: write_array(g, "x", np.full(9, v)), "force"
        )
    monkeypatch.delenv("CUTSWAP_KEEP_SUPERSEDED_HOURS")
    # A resume state whose training was published since, and one of a key no run asks for any more.
    trained, _ = build_store(
        root, "train", "brick-m-s0", {}, {}, lambda g: write_array(g, "log", np.zeros(3))
    )
    roots.write_bytes(roots.join(work_dir(root, "brick-m-s0", trained.key), "resume.pt"), b"r" * 1000)
    roots.write_bytes(roots.join(root, "train", ".work", "old-key", "resume.pt"), b"o" * 2000)
    # An upload a killed process left unfinished: invisible to listings, billed.
    bucket, _, prefix = root[len("s3://") :].partition("/")
    client = s3_server.client()
    key = f"{prefix}/train/.work/gone/resume.pt"
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"p" * 5_000_000)
    time.sleep(1.5)
    before = _keys(s3_server, root)

    dry = _gc(root, "--resume-days", "0.00001", "--upload-hours", "0")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[-1].endswith("a dry run, nothing deleted (--yes deletes)")
    reasons = "\n".join(lines)
    for reason in (
        "never committed; its writer silent",
        "generation 0, superseded",
        "resume state: its training was published",
        "resume state: untouched for",
        "incomplete multipart upload",
        "5.0 MB",
    ):
        assert reason in reasons, dry.stdout
    assert all(line.startswith("would delete") for line in lines[:-1]), dry.stdout
    assert _keys(s3_server, root) == before  # a dry run deletes nothing

    done = _gc(root, "--yes", "--resume-days", "0.00001", "--upload-hours", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith("deleted")
    after = _keys(s3_server, root)
    assert not any(k.startswith("train/.work/") for k in after)
    assert not any(k.startswith("cluster/dead-") for k in after)
    assert client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
    np.testing.assert_array_equal(open_store(live)["x"][:], np.arange(50))
    again = _gc(root, "--resume-days", "0.00001", "--upload-hours", "0")
    assert again.stdout.splitlines()[-1].startswith("0 items, 0 B")


def test_gc_of_a_local_folder_is_refused_in_one_line(tmp_path):
    out = _gc(str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "is a local folder" in out.stderr


_WRITER = """
import sys, time
import numpy as np
from cutswap import roots
from cutswap.pipeline.stores import StoreRef, publishing, write_array
root, who, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ref = StoreRef("cluster", "cat", "0123", roots.normalize(root))
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end:
    with publishing(ref, {"who": who}, replace=True) as group:
        write_array(group, "x", np.full(100, who * 1000 + n))
        time.sleep(1.0)  # a slow writer: its attempt is live the whole time
    n += 1
print(n)
"""

_READER = """
import sys, time
import numpy as np
from cutswap import roots
from cutswap.pipeline.stores import StoreRef, open_store, publish
root, digest, value, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ref = StoreRef("cluster", "cat", "0123", roots.normalize(root), digest)
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end:
    publish._VERIFIED.clear()  # opened afresh each time, as a new job would
    np.testing.assert_array_equal(open_store(ref)["x"][:], np.full(100, value))
    n += 1
    time.sleep(0.3)
print(n)
"""


@pytest.mark.slow
def test_gc_deletes_no_live_attempt_and_no_referenced_generation_while_two_writers_and_a_reader_run(
    s3_server,
):
    """Two writers recompute one store over and over (each attempt live for a second), a reader keeps
    opening the generation its reference names, and ``cutswap gc --yes`` runs over and over with a
    collector's staleness limit of 0 s (its own environment). The writers' heartbeats ask for the default
    5 minutes and their markers keep superseded generations for 60 s: nothing of theirs may go."""
    from cutswap.pipeline.stores import publish

    root = s3_server.bucket() + "/cutswap"
    env = {**os.environ, "CUTSWAP_KEEP_SUPERSEDED_HOURS": str(60 / 3600)}
    env.pop("CUTSWAP_GC_STALE_SECONDS", None)
    first = subprocess.run([sys.executable, "-c", _WRITER, root, "9", "0.1"], env=env, capture_output=True)
    assert first.returncode == 0, first.stderr
    from cutswap.pipeline.stores import StoreRef
    from cutswap.pipeline.stores.objects import latest_commit

    ref = StoreRef("cluster", "cat", "0123", roots.normalize(root))
    digest = latest_commit(ref.path)["digest"]
    publish._VERIFIED.clear()
    seconds = "12"
    workers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, root, str(who), seconds], env=env, **_pipes())
        for who in (1, 2)
    ]
    workers.append(
        subprocess.Popen([sys.executable, "-c", _READER, root, digest, "9000", seconds], env=env, **_pipes())
    )
    collections = []
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        collections.append(_gc(root, "--yes", env={"CUTSWAP_GC_STALE_SECONDS": "0"}))
    outputs = [w.communicate(timeout=120) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    writes = [int(out) for out, _ in outputs[:2]]
    reads = int(outputs[2][0])
    assert min(writes) >= 3 and reads >= 10 and len(collections) >= 2
    for gc in collections:
        assert gc.returncode == 0, gc.stderr
        assert "never committed" not in gc.stdout and "superseded" not in gc.stdout, gc.stdout


def _pipes() -> dict:
    return {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
