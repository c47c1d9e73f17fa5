"""Container images for the local node, built without Docker or a registry.

Two images, each written as an OCI image archive (oci-layout, index.json naming the image in
`io.containerd.image.name`, config, uncompressed layer tars) that `ctr images import` reads:

- the sandbox ("pause") image: dev/pause, a static Go program that sleeps until SIGTERM;
- the penguinmails image: what the Dockerfile describes (same entrypoint, Python 3.11, user
  10001, the wheel in /opt/venv with no pip, the dashboard's build), from three layers: a Debian
  bookworm root filesystem made by `debootstrap --variant=minbase` with python3 and the user, the
  virtualenv with the project's wheel installed by the image's own Python (in a chroot over an
  overlay of the base), and the dashboard built by `make web` (web/dist).

Everything is cached in `<cache_root>/images/`, keyed by a hash of its inputs: the base root
filesystem by its recipe (so a code change never re-runs debootstrap), the virtualenv layer by
the wheel's sources and the pinned dependency versions, the archives by their layers. Layer tars
are reproducible from a given tree: sorted entries, one fixed mtime, numeric owners, no names.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from penguinmails.devstack.buildlock import exclusive
from penguinmails.devstack.controlplane import cache_root
from penguinmails.devstack.mounts import unmount_under

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
PAUSE_SOURCE = Path(__file__).resolve().parent / "pause"

IMAGE_NAME = "ghcr.io/penguinmails/penguinmails:0.1.0"
"""The chart's and the operator's default image, so both find the local one without a pull."""
PAUSE_IMAGE_NAME = "penguinmails.local/pause:1"
"""The node's sandbox image; a name no registry serves, so it is never pulled."""

DEBIAN_SUITE = "bookworm"
PYTHON_VERSION = "3.11"
"""bookworm's python3, the version of the Dockerfile's python:3.11-slim-bookworm."""
# python3 is bookworm's 3.11 (what the Dockerfile's python:3.11-slim-bookworm carries);
# ca-certificates for TLS to SMTP relays and APIs, as in the slim image.
BASE_PACKAGES = ("python3", "ca-certificates")
USER_ID = 10001
# What the wheel is built from: the Dockerfile's builder stage copies exactly these.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "penguinmails", "api", "common", "operator",
                 "sender", "dev")  # fmt: skip
VENV = "/opt/venv"
DASHBOARD = "/opt/penguinmails/dashboard"
"""Where the image carries the dashboard's build (the Dockerfile's web stage output)."""
DASHBOARD_BUILD = REPO_ROOT / "web" / "dist"
# The runtime image's settings, as the Dockerfile's final stage sets them.
ENTRYPOINT = ("penguinmails-operator",)
ENV = (
    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
    f"PM_DASHBOARD_DIR={DASHBOARD}",
)
EXPOSED_PORTS = (8080, 8081)
# One mtime for every entry of every layer: the layers depend only on the trees' contents.
EPOCH = 1_700_000_000
# Bump when the recipe changes in a way the hashed inputs do not show.
RECIPE = "2"

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


class ImageBuildError(RuntimeError):
    """A step of an image build failed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Layer:
    """An uncompressed layer tar stored as a blob: digest == diff_id for uncompressed tars."""

    digest: str
    size: int


@dataclass(frozen=True)
class ImageArchive:
    name: str
    path: Path
    cached: bool
    timings: dict[str, float] = field(default_factory=dict)


def images_dir() -> Path:
    return cache_root() / "images"


def _blob_path(digest: str) -> Path:
    return images_dir() / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:16]


def _tree_files(root: Path, relative: Sequence[str]) -> Iterator[Path]:
    """Every file under the given paths, sorted; symlinks as themselves; no caches."""
    for name in relative:
        path = root / name
        if path.is_file() or path.is_symlink():
            yield path
            continue
        for current, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for file in sorted(files):
                if not file.endswith(".pyc"):
                    yield Path(current) / file


def _files_digest(root: Path, relative: Sequence[str]) -> str:
    parts: list[str | bytes] = []
    for path in _tree_files(root, relative):
        parts.append(path.relative_to(root).as_posix())
        parts.append(os.readlink(path) if path.is_symlink() else path.read_bytes())
    return _hash(*parts)


# -- layers -------------------------------------------------------------------------------------


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = EPOCH
    info.uname = info.gname = ""
    return info


def write_layer(root: Path, members: Sequence[str], *, skip: Sequence[str] = ()) -> Layer:
    """Store the tree(s) `members` (relative to `root`) as a reproducible layer blob.

    Parent directories of each member are included (with their own modes and owners), entries
    are sorted, hard links stay links; `skip` names directories whose contents are left out
    (their mount points are kept: /proc, /sys, /dev are the runtime's).
    """
    staging = images_dir() / "blobs" / f".layer-{os.getpid()}.tar"
    staging.parent.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    with tarfile.open(staging, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(path: Path) -> None:
            arcname = path.relative_to(root).as_posix()
            if arcname in seen or arcname == ".":
                return
            seen.add(arcname)
            info = _normalized(tar.gettarinfo(str(path), arcname))
            if info.isreg():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            elif info.isdir() or info.issym() or info.islnk():
                tar.addfile(info)
            # Device nodes, sockets and fifos have no place in an image layer.

        for member in sorted(members):
            top = root / member
            for parent in reversed(top.relative_to(root).parents):
                add(root / parent)
            add(top)
            if not top.is_dir() or top.is_symlink():
                continue
            for current, dirs, files in os.walk(top):
                here = Path(current)
                if here.relative_to(root).as_posix() in skip:
                    dirs[:] = []
                    continue
                entries = sorted([*dirs, *files])
                dirs.sort()
                for entry in entries:
                    add(here / entry)
    digest = "sha256:" + _file_sha256(staging)
    target = _blob_path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(target)
    return Layer(digest, target.stat().st_size)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _store_blob(data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob_path(digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return digest


def _layer_record(path: Path) -> Layer | None:
    """The layer a cache directory recorded, if its blob is still there."""
    try:
        record = json.loads((path / "layer.json").read_text())
        layer = Layer(record["digest"], int(record["size"]))
    except (OSError, ValueError, KeyError):
        return None
    return layer if _blob_path(layer.digest).is_file() else None


def _record_layer(path: Path, layer: Layer) -> None:
    (path / "layer.json").write_text(json.dumps({"digest": layer.digest, "size": layer.size}))


# -- OCI archive --------------------------------------------------------------------------------


def image_config(layers: Sequence[Layer], config: dict[str, Any]) -> dict[str, Any]:
    return {
        "architecture": _oci_architecture(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }


def penguinmails_config() -> dict[str, Any]:
    """The runtime settings of the penguinmails image, as the Dockerfile's final stage sets them."""
    return {
        "User": f"{USER_ID}:{USER_ID}",
        "Env": list(ENV),
        "Entrypoint": list(ENTRYPOINT),
        "ExposedPorts": {f"{port}/tcp": {} for port in EXPOSED_PORTS},
        "WorkingDir": "/",
    }


def _oci_architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def write_archive(path: Path, name: str, layers: Sequence[Layer], config: dict[str, Any]) -> None:
    """An OCI image archive of `layers` with `config`, named `name` for containerd."""
    config_blob = json.dumps(image_config(layers, config), sort_keys=True).encode()
    config_digest = _store_blob(config_blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest,
            "size": len(config_blob),
        },
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = _store_blob(manifest_blob)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": len(manifest_blob),
                "platform": {"architecture": _oci_architecture(), "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                },
            }
        ],
    }
    staging = path.with_name(path.name + ".partial")
    with tarfile.open(staging, "w", format=tarfile.PAX_FORMAT) as tar:

        def add_bytes(arcname: str, data: bytes) -> None:
            info = _normalized(tarfile.TarInfo(arcname))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add_bytes("index.json", json.dumps(index, sort_keys=True).encode())
        for digest in sorted({config_digest, manifest_digest, *(la.digest for la in layers)}):
            blob = _blob_path(digest)
            info = _normalized(tar.gettarinfo(str(blob), f"blobs/sha256/{blob.name}"))
            info.uid = info.gid = 0
            info.mode = 0o644
            with blob.open("rb") as data:
                tar.addfile(info, data)
    staging.replace(path)


def read_archive_config(path: Path) -> dict[str, Any]:
    """The image config inside an OCI archive (for tests and checks)."""
    with tarfile.open(path) as tar:

        def blob(digest: str) -> Any:
            member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            return json.load(member)

        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
        manifest = blob(index["manifests"][0]["digest"])
        config: dict[str, Any] = blob(manifest["config"]["digest"])
        return config


# -- the pause image ----------------------------------------------------------------------------


def build_pause_image() -> ImageArchive:
    """The sandbox image: dev/pause built static by the Go toolchain, as one layer."""
    with exclusive(images_dir()):
        return _build_pause_image()


def _build_pause_image() -> ImageArchive:
    go_version = subprocess.run(
        ["go", "version"], check=True, capture_output=True, text=True
    ).stdout
    key = _hash(RECIPE, go_version, _files_digest(PAUSE_SOURCE, ["go.mod", "main.go"]))
    archive = images_dir() / f"pause-{key}.tar"
    if archive.is_file():
        return ImageArchive(PAUSE_IMAGE_NAME, archive, cached=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pm-pause-") as scratch:
        root = Path(scratch) / "rootfs"
        root.mkdir()
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=readonly"}
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", str(root / "pause")],
            cwd=PAUSE_SOURCE,
            env=env,
            check=True,
        )
        (root / "pause").chmod(0o755)
        os.chown(root / "pause", 0, 0)
        layer = write_layer(root, ["pause"])
    write_archive(
        archive, PAUSE_IMAGE_NAME, [layer], {"Entrypoint": ["/pause"], "User": "65535:65535"}
    )
    seconds = time.monotonic() - started
    log.info("pause image built in %.0fs", seconds)
    return ImageArchive(PAUSE_IMAGE_NAME, archive, cached=False, timings={"pause image": seconds})


# -- the penguinmails image ---------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror apt already uses here (the reachable registry), for debootstrap."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
                if DEBIAN_SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                    return str(fields["URIs"]).split()[0]
        else:
            for line in text.splitlines():
                words = line.split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == DEBIAN_SUITE:
                    return words[1] if not words[1].startswith("[") else words[2]
    raise ImageBuildError(
        f"no Debian {DEBIAN_SUITE} mirror in /etc/apt/sources.list(.d): configure apt first"
    )


def _chroot(root: Path, *argv: str, env: dict[str, str] | None = None) -> None:
    base_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    result = subprocess.run(
        ["chroot", str(root), *argv],
        env={**base_env, **(env or {})},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ImageBuildError(
            f"`{' '.join(argv)}` in {root} failed ({result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )


def base_rootfs() -> tuple[Path, Layer, float]:
    """debootstrap's bookworm with python3 and the image's user, and its layer (cached).

    Returns the root filesystem, its layer and the seconds spent (0 when cached).
    """
    key = _hash(RECIPE, DEBIAN_SUITE, "minbase", *BASE_PACKAGES, str(USER_ID), _oci_architecture())
    target = images_dir() / f"rootfs-{key}"
    layer = _layer_record(target)
    if layer is not None:
        return target / "rootfs", layer, 0.0
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        raise ImageBuildError("debootstrap not found: run dev/install-system-packages.sh")
    started = time.monotonic()
    staging = target.with_name(target.name + ".partial")
    unmount_under(staging)  # what a killed debootstrap left mounted (/proc, maybe /dev)
    shutil.rmtree(staging, ignore_errors=True)
    root = staging / "rootfs"
    root.mkdir(parents=True)
    mirror = debian_mirror()
    log.info("debootstrap %s from %s (a few minutes, once per machine)", DEBIAN_SUITE, mirror)
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            DEBIAN_SUITE,
            str(root),
            mirror,
        ],
        env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"},
        capture_output=True,
        text=True,
    )
    unmount_under(root)
    if result.returncode != 0:
        log_file = root / "debootstrap" / "debootstrap.log"
        details = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
        raise ImageBuildError(
            f"debootstrap failed ({result.returncode}):\n{result.stderr[-2000:]}\n{details}"
        )
    # The user of the Dockerfile: numeric, so runAsNonRoot can be verified without names.
    _chroot(root, "groupadd", "--system", "--gid", str(USER_ID), "penguinmails")
    _chroot(
        root,
        "useradd", "--system", "--uid", str(USER_ID), "--gid", str(USER_ID),
        "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
        "penguinmails",
    )  # fmt: skip
    # What only the build needed, and what differs between two runs of the same recipe.
    for leftover in ("var/cache/apt", "var/lib/apt/lists", "var/log", "var/cache/debconf"):
        for child in (root / leftover).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for stale in ("etc/machine-id", "etc/hostname", "etc/resolv.conf"):
        with contextlib.suppress(FileNotFoundError):
            (root / stale).unlink()
    layer = write_layer(root, ["."], skip=["proc", "sys", "dev", "tmp", "run"])
    _record_layer(staging, layer)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    seconds = time.monotonic() - started
    log.info("debootstrap and base layer: %.0fs", seconds)
    return target / "rootfs", layer, seconds


def _constraints() -> str:
    """The dependency versions the tests run with (this interpreter's), pinned for the image."""
    frozen = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "freeze",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "\n".join(sorted(line for line in frozen.splitlines() if "==" in line)) + "\n"


# pip's --python-version selects wheels but not environment markers, which pip evaluates for
# the interpreter running it: redis needs async-timeout on python_full_version < "3.11.3"
# (bookworm's 3.11.2), not on ours. So pip runs with the image's version as its own.
_PIP_AS_TARGET = """
import platform, runpy, sys
version = sys.argv.pop(1)
platform.python_version = lambda: version
platform.python_version_tuple = lambda: tuple(version.split("."))
sys.argv[0] = "pip"
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""


def _python_version(root: Path) -> str:
    """The full version of the root filesystem's python3, checked against PYTHON_VERSION."""
    found = subprocess.run(
        [
            "chroot",
            str(root),
            "/usr/bin/python3",
            "-c",
            "import platform; print(platform.python_version())",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if found.rpartition(".")[0] != PYTHON_VERSION:
        raise ImageBuildError(f"{root} has Python {found or '?'}, the image needs {PYTHON_VERSION}")
    return found


def _manylinux_platforms(root: Path) -> list[str]:
    """The wheel platforms the image's glibc runs (pip 23 does not expand manylinux_2_x)."""
    libc = sorted(root.glob("usr/lib/*-linux-gnu/libc.so.6")) + sorted(root.glob("lib*/libc.so.6"))
    version = subprocess.run(
        ["chroot", str(root), "/usr/bin/ldd", "--version"], capture_output=True, text=True
    ).stdout
    found = re.search(r"(\d+)\.(\d+)\s*$", version.splitlines()[0] if version else "")
    if not libc or not found:
        raise ImageBuildError(f"cannot tell the glibc version of {root}")
    minor, arch = int(found.group(2)), platform.machine()
    return [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)] + [
        f"manylinux2014_{arch}",
        f"manylinux2010_{arch}",
        f"manylinux1_{arch}",
    ]


@contextlib.contextmanager
def _overlay(lower: Path, scratch: Path) -> Iterator[tuple[Path, Path]]:
    """A writable view of `lower` whose changes land in the returned upper directory."""
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    subprocess.run(
        [
            "mount", "-t", "overlay", "overlay",
            "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged),
        ],
        check=True,
    )  # fmt: skip
    try:
        yield merged, upper
    finally:
        subprocess.run(["umount", str(merged)], check=False)


def _app_layer(root: Path, base_key: str) -> tuple[Layer, float]:
    """/opt/venv with the project's wheel and its pinned dependencies, installed in a chroot."""
    constraints = _constraints()
    key = _hash(RECIPE, base_key, constraints, _files_digest(REPO_ROOT, WHEEL_SOURCES))
    target = images_dir() / f"venv-{key}"
    layer = _layer_record(target)
    if layer is not None:
        return layer, 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pm-image-") as scratch_dir:
        scratch = Path(scratch_dir)
        source, wheels = scratch / "source", scratch / "wheels"
        for name in WHEEL_SOURCES:
            origin = REPO_ROOT / name
            if origin.is_dir() and not origin.is_symlink():
                shutil.copytree(
                    origin,
                    source / name,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "controlplane", "pause"),
                )
            else:
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, source / name, follow_symlinks=False)
        (scratch / "constraints.txt").write_text(constraints)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        # A fixed date for the wheel's zip entries: its hash lands in direct_url.json.
        subprocess.run(
            [*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)],
            env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)},
            check=True,
        )
        project_wheel = next(wheels.glob("penguinmails-*.whl"))
        platforms = [arg for p in _manylinux_platforms(root) for arg in ("--platform", p)]
        target_version = _python_version(root)
        subprocess.run(
            [
                sys.executable, "-c", _PIP_AS_TARGET, target_version,
                "--disable-pip-version-check", "-q",
                "download", "--only-binary=:all:", "-d", str(wheels),
                "-c", str(scratch / "constraints.txt"),
                "--python-version", target_version, "--implementation", "cp",
                "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
                *platforms, str(project_wheel),
            ],
            check=True,
        )  # fmt: skip
        pip_spec = importlib.util.find_spec("pip")
        if pip_spec is None or pip_spec.origin is None:
            raise ImageBuildError(f"pip is missing from {sys.executable}: run `make deps`")
        pip_package = Path(pip_spec.origin).parent
        (scratch / "layer").mkdir()
        with _overlay(root, scratch / "layer") as (merged, upper):
            build_dir = merged / "tmp" / "pm-build"
            shutil.copytree(wheels, build_dir / "wheels")
            shutil.copytree(pip_package, build_dir / "pip" / "pip", symlinks=True)
            _chroot(merged, "/usr/bin/python3", "-m", "venv", "--without-pip", VENV)
            # The builder's pip installs into the venv, which gets no pip of its own.
            _chroot(
                merged,
                f"{VENV}/bin/python", "-m", "pip", "install", "-q", "--no-index",
                "--disable-pip-version-check", "--no-cache-dir", "--compile",
                "--only-binary=:all:", "--find-links", "/tmp/pm-build/wheels",
                f"/tmp/pm-build/wheels/{project_wheel.name}",
                env={"PYTHONPATH": "/tmp/pm-build/pip", "SOURCE_DATE_EPOCH": str(EPOCH)},
            )  # fmt: skip
            _chroot(merged, f"{VENV}/bin/python", "-c", "import penguinmails.operator.__main__")
            layer = write_layer(upper, [VENV.lstrip("/")])
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _record_layer(staging, layer)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return layer, time.monotonic() - started


KEEP_BUILDS = 2
"""Virtualenv layers and archives kept per cache: each code change makes a new ~250 MB layer."""


def _prune(current: Path, venv: Layer) -> None:
    """Keep the newest KEEP_BUILDS virtualenv layers and penguinmails archives, and the current
    ones (which may be older: a cached build reused after switching branches)."""
    by_age = sorted(images_dir().glob("venv-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in by_age[KEEP_BUILDS:]:
        layer = _layer_record(stale)
        if layer == venv:
            continue
        if layer is not None:
            _blob_path(layer.digest).unlink(missing_ok=True)
        shutil.rmtree(stale, ignore_errors=True)
    archives = sorted(
        images_dir().glob("penguinmails-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for stale in archives[KEEP_BUILDS:]:
        if stale != current:
            stale.unlink(missing_ok=True)


def build_penguinmails_image() -> ImageArchive:
    """The penguinmails image as an OCI archive: base, virtualenv and dashboard layers (cached)."""
    # One builder at a time: concurrent test runs would debootstrap into the same staging folder.
    with exclusive(images_dir()):
        return _build_penguinmails_image()


def _dashboard_layer() -> Layer:
    """The dashboard's build (web/dist, made by `make web`) at DASHBOARD."""
    if not (DASHBOARD_BUILD / "index.html").is_file():
        raise ImageBuildError(f"{DASHBOARD_BUILD} has no build of the dashboard: run `make web`")
    with tempfile.TemporaryDirectory(prefix="penguinmails-dashboard-") as staging:
        tree = Path(staging) / DASHBOARD.lstrip("/")
        shutil.copytree(DASHBOARD_BUILD, tree)
        for path in [Path(staging) / "opt", *sorted((Path(staging) / "opt").rglob("*"))]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return write_layer(Path(staging), [DASHBOARD.lstrip("/")])


def _build_penguinmails_image() -> ImageArchive:
    root, base, debootstrap_seconds = base_rootfs()
    venv, venv_seconds = _app_layer(root, base.digest)
    dashboard = _dashboard_layer()
    key = _hash(
        RECIPE, base.digest, venv.digest, dashboard.digest, json.dumps(penguinmails_config())
    )
    archive = images_dir() / f"penguinmails-{key}.tar"
    timings = {"debootstrap": debootstrap_seconds, "venv layer": venv_seconds}
    if archive.is_file():
        return ImageArchive(IMAGE_NAME, archive, cached=True, timings=timings)
    started = time.monotonic()
    write_archive(archive, IMAGE_NAME, [base, venv, dashboard], penguinmails_config())
    _prune(archive, venv)
    timings["archive"] = time.monotonic() - started
    log.info(
        "penguinmails image: debootstrap %.0fs, venv layer %.0fs, archive %.0fs",
        debootstrap_seconds,
        venv_seconds,
        timings["archive"],
    )
    return ImageArchive(IMAGE_NAME, archive, cached=False, timings=timings)


def build_all() -> list[ImageArchive]:
    return [build_pause_image(), build_penguinmails_image()]


def main(argv: list[str] | None = None) -> int:
    """Build (or find cached) the local images and print where they are."""
    import argparse

    argparse.ArgumentParser(prog="python -m penguinmails.devstack.images").parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for image in build_all():
        state = "cached" if image.cached else "built"
        phases = ", ".join(f"{k} {v:.0f}s" for k, v in image.timings.items())
        print(f"{image.name}: {image.path} ({state}{'; ' + phases if phases else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
