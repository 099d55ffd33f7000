"""Sharing generated datasets through DVC remotes: a local directory and S3.

The S3 remote is moto's server on loopback, started inside the test. The project
runs generate + split on imported decisions, so no teacher is needed.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from test_pipeline import PROJECT_FILES, REPO, project_env, ran, sh

DATASET = ("data/decisions.parquet", "data/features.json", "data/splits")
BUCKET = "datasets"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
            "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


def dvc_fails(*args, cwd) -> str:
    """Run dvc expecting failure; return its output."""
    env = project_env(cwd, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                      DVC_NO_ANALYTICS="1")
    result = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode != 0, f"dvc {' '.join(args)} succeeded:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A committed project whose generate and split stages ran (on imported decisions)."""
    root = tmp_path_factory.mktemp("origin")
    for name in PROJECT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["generate"]["source"] = "import"
    params["slm"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "config", "core.autostage", "true", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "project", cwd=root)
    sh("dvc", "repro", "split", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "dataset", cwd=root)
    return root


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint on loopback with an empty bucket; stopped after the module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for key, value in FAKE_AWS.items():
            env.setenv(key, value)
        client = boto3.client("s3", endpoint_url=url)
        client.create_bucket(Bucket=BUCKET)
        yield url, client
    server.stop()


def dataset_bytes(root: Path) -> dict[str, bytes]:
    files = {}
    for name in DATASET:
        path = root / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                files[str(file.relative_to(root))] = file.read_bytes()
    return files


def push_to(project: Path, name: str, url: str, *settings: tuple[str, str]) -> None:
    """Make `name` the project's default remote (committed, so clones get it) and push."""
    sh("dvc", "remote", "add", "-f", "-d", name, url, cwd=project)
    for key, value in settings:
        sh("dvc", "remote", "modify", name, key, value, cwd=project)
    sh("git", "commit", "-qam", f"remote {name}", cwd=project)
    sh("dvc", "push", cwd=project)


def fresh_clone(project: Path, where: Path) -> Path:
    sh("git", "clone", "-q", str(project), str(where), cwd=project)
    return where


def lock_md5(project: Path, stage: str, out: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]
    return next(o["md5"] for o in lock["outs"] if o["path"] == out)


def remote_objects(keys: list[str]) -> set[str]:
    """Object ids (md5, '.dir' included) from remote paths .../files/md5/ab/cdef..."""
    return {"".join(Path(k).parts[-2:]) for k in keys}


def corrupt(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    return bytes(flipped)


def test_base_models_are_never_pushed():
    download = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["download"]
    assert set(download["foreach"]) == {"teacher", "slm"}  # a list or a mapping of the two roles
    assert [spec["push"] for out in download["do"]["outs"] for spec in out.values()] == [False]


def test_directory_remote_gives_a_fresh_clone_identical_files(project, tmp_path):
    remote = tmp_path / "remote"
    push_to(project, "shared_dir", str(remote))
    stored = remote_objects([str(p) for p in remote.rglob("*") if p.is_file()])
    assert lock_md5(project, "generate", "data/decisions.parquet") in stored
    assert lock_md5(project, "download@teacher", "models/teacher") not in stored  # push: false

    clone = fresh_clone(project, tmp_path / "clone")
    sh("dvc", "pull", "--allow-missing", cwd=clone)
    assert dataset_bytes(clone) == dataset_bytes(project)
    assert not (clone / "models/teacher").exists()


def test_s3_remote_gives_a_fresh_clone_identical_files(project, s3, tmp_path):
    url, client = s3
    push_to(project, "shared_s3", f"s3://{BUCKET}/roundtrip", ("endpointurl", url))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="roundtrip/")["Contents"]]
    assert lock_md5(project, "generate", "data/decisions.parquet") in remote_objects(keys)
    assert lock_md5(project, "download@teacher", "models/teacher") not in remote_objects(keys)

    clone = fresh_clone(project, tmp_path / "clone")
    sh("dvc", "pull", "--allow-missing", cwd=clone)
    assert dataset_bytes(clone) == dataset_bytes(project)


def test_corrupted_s3_object_is_refused_on_pull_when_verify_is_on(project, s3, tmp_path):
    url, client = s3
    push_to(project, "corrupt_s3", f"s3://{BUCKET}/corrupt", ("endpointurl", url))
    md5 = lock_md5(project, "generate", "data/decisions.parquet")
    key = f"corrupt/files/md5/{md5[:2]}/{md5[2:]}"
    client.put_object(Bucket=BUCKET, Key=key, Body=corrupt(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
    original = (project / "data/decisions.parquet").read_bytes()

    # DVC's default for S3 (verify: false) trusts the object's name: the damage goes unnoticed.
    trusting = fresh_clone(project, tmp_path / "trusting")
    sh("dvc", "pull", "--allow-missing", cwd=trusting)
    assert (trusting / "data/decisions.parquet").read_bytes() == corrupt(original)

    # verify: true rehashes every downloaded object and drops the damaged one: pulling the
    # stage fails naming it, and even --allow-missing (which fetches what it can) never
    # checks the damaged bytes out.
    verifying = fresh_clone(project, tmp_path / "verifying")
    sh("dvc", "remote", "modify", "--local", "corrupt_s3", "verify", "true", cwd=verifying)
    log = dvc_fails("pull", "generate", cwd=verifying)
    assert "data/decisions.parquet" in log
    assert not (verifying / "data/decisions.parquet").exists()
    sh("dvc", "pull", "--allow-missing", cwd=verifying)
    assert not (verifying / "data/decisions.parquet").exists()
    assert dataset_bytes(verifying) == {k: v for k, v in dataset_bytes(project).items() if k != "data/decisions.parquet"}

    # DVC only checks that an object exists before uploading: delete the damaged one, then push.
    client.delete_object(Bucket=BUCKET, Key=key)
    sh("dvc", "push", cwd=project)
    sh("dvc", "pull", "generate", cwd=verifying)
    assert dataset_bytes(verifying) == dataset_bytes(project)


def test_corrupted_object_in_a_directory_remote_is_refused_on_pull(project, tmp_path):
    remote = tmp_path / "remote"
    push_to(project, "corrupt_dir", str(remote))
    md5 = lock_md5(project, "generate", "data/decisions.parquet")
    stored = remote / "files/md5" / md5[:2] / md5[2:]
    stored.chmod(0o644)  # DVC stores objects read-only
    stored.write_bytes(corrupt(stored.read_bytes()))

    # A directory remote is rehashed on pull even with verify off: the object is refused.
    clone = fresh_clone(project, tmp_path / "clone")
    log = dvc_fails("pull", "generate", cwd=clone)
    assert "data/decisions.parquet" in log
    assert not (clone / "data/decisions.parquet").exists()
    assert not stored.exists()  # DVC deleted the damaged object from the remote...
    sh("dvc", "push", cwd=project)  # ...so a push from an intact cache repairs it
    sh("dvc", "pull", "--allow-missing", cwd=clone)
    assert dataset_bytes(clone) == dataset_bytes(project)


def test_repro_pull_on_a_fresh_clone_reruns_nothing_the_remote_holds(project, tmp_path):
    push_to(project, "for_repro", str(tmp_path / "remote"))
    clone = fresh_clone(project, tmp_path / "clone")
    log = sh("dvc", "repro", "--pull", "split", cwd=clone)
    # Only the teacher download runs again: its output is never pushed (push: false); and the
    # runtime stage, which re-resolves the machine's runtime on every repro (same bytes here).
    assert ran(log) == {"download@teacher", "runtime"}
    assert "Pulling data for stage: 'generate'" in log and "Pulling data for stage: 'split'" in log
    assert dataset_bytes(clone) == dataset_bytes(project)
    assert "up to date" in sh("dvc", "status", "split", cwd=clone)
