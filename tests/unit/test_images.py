"""The locally built images (dev/images.py): same image as the Dockerfile, reproducible layers,
archives containerd can import."""

from __future__ import annotations

import json
import os
import re
import shlex
import tarfile
from pathlib import Path

import pytest

from penguinmails.devstack import images

REPO_ROOT = Path(__file__).resolve().parents[2]


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, per stage, continuation lines joined."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = [[]]
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def final_stage() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for instruction, rest in dockerfile_stages()[-1]:
        found.setdefault(instruction, []).append(rest)
    return found


def test_the_runtime_settings_are_the_dockerfiles() -> None:
    stage = final_stage()
    config = images.penguinmails_config()
    assert json.loads(stage["ENTRYPOINT"][-1]) == config["Entrypoint"]
    assert stage["USER"][-1] == config["User"]
    exposed = {f"{port}/tcp" for rest in stage["EXPOSE"] for port in rest.split()}
    assert exposed == set(config["ExposedPorts"])
    dockerfile_env = dict(
        pair.split("=", 1) for rest in stage["ENV"] for pair in shlex.split(rest) if "=" in pair
    )
    image_env = dict(item.split("=", 1) for item in config["Env"])
    for name, value in dockerfile_env.items():
        expected = value.replace("$PATH", "")
        assert image_env[name].startswith(expected), (name, image_env[name], value)
    # The virtualenv the Dockerfile copies is where the local image installs the wheel.
    assert any(f"{images.VENV} {images.VENV}" in rest for rest in stage["COPY"])


def test_the_python_is_the_dockerfiles() -> None:
    """Dockerfile: python:3.11-slim-bookworm; local image: bookworm's python3 (3.11)."""
    # The global ARGs, before the first FROM.
    args = dict(rest.split("=", 1) for i, rest in dockerfile_stages()[0] if i == "ARG")
    python_image = args["PYTHON_IMAGE"]
    found = re.fullmatch(r"python:(\d+\.\d+)-slim-(\w+)", python_image)
    assert found, python_image
    assert found.group(1) == images.PYTHON_VERSION
    assert found.group(2) == images.DEBIAN_SUITE


def test_the_wheel_is_built_from_what_the_dockerfile_copies() -> None:
    builder = dockerfile_stages()[1]
    copied = [
        source.rstrip("/")
        for instruction, rest in builder
        if instruction == "COPY" and "--from" not in rest
        for source in rest.split()[:-1]
    ]
    assert sorted(copied) == sorted(images.WHEEL_SOURCES)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_tree(root: Path, mtime: int) -> None:
    (root / "opt" / "venv" / "bin").mkdir(parents=True)
    (root / "opt" / "venv" / "bin" / "tool").write_text("#!/opt/venv/bin/python\n")
    (root / "opt" / "venv" / "bin" / "tool").chmod(0o755)
    (root / "opt" / "venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "opt" / "venv" / "lib.txt").write_text("x" * 1000)
    os.link(root / "opt" / "venv" / "lib.txt", root / "opt" / "venv" / "same.txt")
    for path in [root / "opt", *sorted((root / "opt").rglob("*"))]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def test_a_layer_depends_only_on_the_tree(cache: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_tree(first, 1_000_000)
    make_tree(second, 2_000_000)
    layer = images.write_layer(first, ["opt/venv"])
    assert images.write_layer(second, ["opt/venv"]) == layer

    with tarfile.open(images.images_dir() / "blobs" / "sha256" / layer.digest[7:]) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["opt", "opt/venv"]
    assert {m.mtime for m in members} == {images.EPOCH}
    assert {(m.uname, m.gname) for m in members} == {("", "")}
    links = {m.name: m.linkname for m in members if m.islnk() or m.issym()}
    assert links == {
        "opt/venv/bin/python": "/usr/bin/python3",
        "opt/venv/same.txt": "opt/venv/lib.txt",
    }


def test_an_archive_names_the_image_for_containerd(cache: Path, tmp_path: Path) -> None:
    make_tree(tmp_path / "tree", 1_000_000)
    layer = images.write_layer(tmp_path / "tree", ["opt/venv"])
    archive = tmp_path / "image.tar"
    images.write_archive(archive, images.IMAGE_NAME, [layer], images.penguinmails_config())
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
    assert {"oci-layout", "index.json", f"blobs/sha256/{layer.digest[7:]}"} <= names
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == images.IMAGE_NAME
    config = images.read_archive_config(archive)
    assert config["rootfs"]["diff_ids"] == [layer.digest]
    assert config["config"] == images.penguinmails_config()


def test_old_builds_are_pruned_but_never_the_current_one(cache: Path, tmp_path: Path) -> None:
    layers = []
    for age in range(4):  # venv-0 is the newest, venv-3 the oldest
        tree = tmp_path / f"tree{age}"
        make_tree(tree, 1_000_000)
        (tree / "opt" / "venv" / "which").write_text(str(age))
        layer = images.write_layer(tree, ["opt/venv"])
        record = images.images_dir() / f"venv-{age}"
        record.mkdir()
        (record / "layer.json").write_text(json.dumps({"digest": layer.digest, "size": layer.size}))
        archive = images.images_dir() / f"penguinmails-{age}.tar"
        archive.write_bytes(b"")
        for path in (record, archive):
            os.utime(path, (2_000_000 - age, 2_000_000 - age))
        layers.append(layer)

    # The oldest is in use (a cached build reused): it stays, with its blob.
    images._prune(images.images_dir() / "penguinmails-3.tar", layers[3])

    left = sorted(p.name for p in images.images_dir().iterdir() if p.name != "blobs")
    assert left == [
        "penguinmails-0.tar", "penguinmails-1.tar", "penguinmails-3.tar",
        "venv-0", "venv-1", "venv-3",
    ]  # fmt: skip
    blobs = {p.name for p in (images.images_dir() / "blobs" / "sha256").iterdir()}
    assert blobs == {layers[i].digest[7:] for i in (0, 1, 3)}
