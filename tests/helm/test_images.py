"""The container images the Helm chart runs: ``Dockerfile`` (CPU) and ``Dockerfile.gpu``.

The static tests read both Dockerfiles with the small parser below (logical lines with their
continuations joined and comments dropped, stages, ARG/ENV substitution) and ``.dockerignore`` with
a matcher that is enough for the patterns the project writes. They need no Docker engine. The
``docker`` tests build the CPU image and run it the way the chart's pods do (read-only root
filesystem, a writable /tmp); they skip where no Docker engine answers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.helm.dockerfile import (
    Dockerfile,
    Stage,
    context_copies,
    dockerignore_patterns,
    is_excluded,
    key_values,
    parse_copy,
    parse_dockerfile,
    pip_installs,
    requirements,
)

ROOT = Path(__file__).resolve().parents[2]
CPU = "Dockerfile"
GPU = "Dockerfile.gpu"
DOCKERFILES = [CPU, GPU]

WORKDIR = "/opt/neuropool"
EXTRAS = {"s3", "prefect", "kubernetes"}
PORTS = {"8786", "8787", "4200"}
TMP_CACHES = ("NUMBA_CACHE_DIR", "MPLCONFIGDIR", "PREFECT_HOME", "XDG_CACHE_HOME")


# --- fixtures -------------------------------------------------------------------------------------


@cache
def pyproject() -> dict:
    """The project's ``pyproject.toml``, parsed once."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


@cache
def dockerfile(name: str) -> Dockerfile:
    """One of the project's Dockerfiles, parsed once.

    Parameters
    ----------
    name : str
        Its file name at the repository root.

    Returns
    -------
    Dockerfile
    """
    return parse_dockerfile(ROOT / name)


def _extras(df: Dockerfile) -> list[tuple[Stage, int, set[str]]]:
    """The stages that ``pip install`` the project with extras (``".[a,b]"``).

    Parameters
    ----------
    df : Dockerfile
        A parsed Dockerfile.

    Returns
    -------
    list of (Stage, int, set of str)
        The stage, the instruction's position in it, and the extras named.
    """
    found = []
    for stage in df.stages:
        for index, tokens in pip_installs(stage):
            for req in requirements(tokens):
                if m := re.fullmatch(r"\.\[([^\]]*)\]", req):
                    found.append((stage, index, {e.strip() for e in m.group(1).split(",")}))
    return found


# --- the parser and matcher themselves ------------------------------------------------------------


def test_parser_joins_continuations_and_drops_comments(tmp_path: Path) -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS one\n"
        "ARG BASE\n"
        "RUN echo a \\\n"
        "    # a comment inside the continuation\n"
        "    && echo b\n"
        "ENV A=1 B=\"two words\"\n"
        "FROM one\n"
        'COPY --chown=1:1 ["x y", "z/"]\n'
    )
    (tmp_path / "Dockerfile").write_text(text)
    df = parse_dockerfile(tmp_path / "Dockerfile")
    assert [s.base for s in df.stages] == ["python:3.11-slim", "one"]
    first = df.stages[0]
    assert [i.keyword for i in first.instructions] == ["ARG", "RUN", "ENV"]
    assert first.all("run")[0].args == "echo a     && echo b"
    assert first.all("RUN")[0].line == 5
    assert first.env == {"BASE": "python:3.11-slim", "A": "1", "B": "two words"}
    assert df.stages[1].env == {"A": "1", "B": "two words"}  # ENV is inherited, ARG is not
    copy = parse_copy(df.final.all("COPY")[0])
    assert (copy.sources, copy.dest, copy.from_) == (["x y"], "z/", None)


def test_dockerignore_matcher() -> None:
    patterns = [".git", "**/__pycache__", "*.egg-info", "**/*.zarr", "docs", "!docs/keep.md"]
    assert is_excluded(".git", patterns)
    assert is_excluded(".git/objects/ab", patterns)
    assert is_excluded("neuropool/io/__pycache__/codecs.cpython-311.pyc", patterns)
    assert is_excluded("__pycache__", patterns)
    assert is_excluded("neuropool.egg-info/PKG-INFO", patterns)
    assert is_excluded("out/session.zarr/.zgroup", patterns)
    assert is_excluded("top.zarr", patterns)
    assert is_excluded("docs/other.md", patterns)
    assert not is_excluded("docs/keep.md", patterns)
    assert not is_excluded(".github", patterns)
    assert not is_excluded("neuropool/io/codecs.py", patterns)


# --- both images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_sources_exist_and_are_in_the_context(name: str) -> None:
    patterns = dockerignore_patterns()
    copies = context_copies(dockerfile(name))
    assert copies, f"{name} copies nothing from the build context"
    for _, copy in copies:
        for source in copy.sources:
            assert not re.match(r"^\w+://", source), f"{name}: {source} is fetched, not copied"
            assert (ROOT / source).exists(), f"{name} copies {source}, which the repository lacks"
            assert not is_excluded(source, patterns), f".dockerignore excludes {source} ({name})"
            if (ROOT / source).is_dir():
                # Inside a copied folder only bytecode caches may be left out.
                for path in (ROOT / source).rglob("*"):
                    rel = path.relative_to(ROOT).as_posix()
                    if path.is_file() and "__pycache__" not in path.parts:
                        assert not is_excluded(rel, patterns), f".dockerignore excludes {rel}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_project_installed_from_its_own_files_with_existing_extras(name: str) -> None:
    df = dockerfile(name)
    installs = _extras(df)
    assert installs, f'{name} has no pip install ".[extras]"'
    optional = set(pyproject()["project"]["optional-dependencies"])
    for stage, index, extras in installs:
        assert extras <= optional, f"{name}: extras {sorted(extras - optional)} not in pyproject.toml"
        assert extras >= EXTRAS, f"{name}: the image lacks extras {sorted(EXTRAS - extras)}"
        # What pip needs to build the project is copied into the stage before the install.
        copied = {
            PurePosixPath(src).as_posix().rstrip("/")
            for ins in stage.instructions[:index]
            if ins.keyword in ("COPY", "ADD") and parse_copy(ins).from_ is None
            for src in parse_copy(ins).sources
        }
        needed = {"pyproject.toml", pyproject()["project"]["readme"], "neuropool"}
        assert needed <= copied, f"{name}: {sorted(needed - copied)} not copied before pip install"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_user_is_numeric_and_not_root(name: str) -> None:
    final = dockerfile(name).final
    users = final.all("USER")
    assert users, f"{name}: the image runs as root (no USER)"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", final.expand(users[-1].args))
    assert m, f"{name}: USER {users[-1].args} is not numeric (runAsNonRoot cannot check a name)"
    uid, gid = int(m.group(1)), int(m.group(2) or m.group(1))
    assert uid != 0 and gid != 0
    # The user exists in the image, with its home.
    runs = " ".join(i.args for i in final.all("RUN"))
    assert re.search(rf"useradd\b[^;&]*--uid {uid}\b", runs), f"{name}: no useradd --uid {uid}"
    assert re.search(rf"groupadd\b[^;&]*--gid {gid}\b", runs), f"{name}: no groupadd --gid {gid}"
    assert "--home-dir /home/neuropool --create-home" in runs


@pytest.mark.parametrize("name", DOCKERFILES)
def test_workdir_and_configs(name: str) -> None:
    final = dockerfile(name).final
    assert final.all("WORKDIR"), f"{name} sets no WORKDIR"
    assert final.expand(final.all("WORKDIR")[-1].args) == WORKDIR
    configs = [
        copy for ins in final.all("COPY")
        if (copy := parse_copy(ins)).from_ is None and "configs" in [s.strip("/") for s in copy.sources]
    ]
    assert configs, f"{name}: the image does not copy configs/"
    assert configs[0].dest.rstrip("/") == f"{WORKDIR}/configs"
    assert (ROOT / "configs" / "prefect.yaml").is_file()  # what the chart's deploy job reads
    assert (ROOT / "configs" / "cluster").is_dir()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_pinned(name: str) -> None:
    df = dockerfile(name)
    names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        if stage.base in names:
            continue
        assert "$" not in stage.base, f"{name}: FROM {stage.base} has an undefined build argument"
        image = stage.base.split("@")[0]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag or "@" in stage.base, f"{name}: FROM {stage.base} has no tag"
        assert tag != "latest", f"{name}: FROM {stage.base}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_version_and_license_labels_follow_pyproject(name: str) -> None:
    final = dockerfile(name).final
    project = pyproject()["project"]
    assert final.env.get("NEUROPOOL_VERSION") == project["version"]
    labels: dict[str, str] = {}
    for ins in final.all("LABEL"):
        labels |= {k: final.expand(v) for k, v in key_values(ins.args).items()}
    oci = "org.opencontainers.image."
    for key in ("source", "version", "title", "description", "licenses"):
        assert labels.get(oci + key), f"{name}: no {oci}{key} label"
    assert labels[oci + "version"] == project["version"]
    assert labels[oci + "licenses"] == project["license"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_environment_for_a_read_only_root(name: str) -> None:
    final = dockerfile(name).final
    env = final.env
    for var in TMP_CACHES:
        assert env.get(var, "").startswith("/tmp/"), f"{name}: {var}={env.get(var)} is not under /tmp"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("HOME") == "/home/neuropool"
    assert env.get("PATH", "").startswith("/opt/venv/bin:")
    assert "/opt/venv" in [parse_copy(i).sources[0] for i in final.all("COPY") if parse_copy(i).from_]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_ports_and_command(name: str) -> None:
    final = dockerfile(name).final
    assert not final.all("ENTRYPOINT"), f"{name}: the chart gives full commands; no ENTRYPOINT"
    ports = {p.split("/")[0] for ins in final.all("EXPOSE") for p in ins.args.split()}
    assert ports >= PORTS, f"{name} does not expose {sorted(PORTS - ports)}"
    assert json.loads(final.all("CMD")[-1].args) == ["neuropool", "--help"]


# --- the CPU image --------------------------------------------------------------------------------


def test_cpu_base_is_python_slim() -> None:
    df = dockerfile(CPU)
    base = df.external_base(df.final)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains("3.11")


# --- the GPU image --------------------------------------------------------------------------------


def _cuda_version(image: str) -> tuple[int, int]:
    """The CUDA version of an ``nvidia/cuda`` image tag.

    Parameters
    ----------
    image : str
        ``nvidia/cuda:<major>.<minor>.<patch>-...``.

    Returns
    -------
    (int, int)
        Major and minor.
    """
    m = re.match(r"nvidia/cuda:(\d+)\.(\d+)(?:\.\d+)?-", image)
    assert m, f"{image} is not an nvidia/cuda image"
    return int(m.group(1)), int(m.group(2))


def test_gpu_base_is_a_cuda_12_cudnn_runtime_image() -> None:
    df = dockerfile(GPU)
    base = df.external_base(df.final)
    assert base.startswith("nvidia/cuda:"), base
    major, _ = _cuda_version(base)
    assert major == 12
    tag = base.split(":", 1)[1]
    assert "-cudnn-runtime-" in tag, f"{base}: a runtime image with cuDNN, not devel or base"
    runs = " ".join(i.args for s in df.stages for i in s.all("RUN"))
    assert re.search(r"install[^&]*\bpython3\.11\b", runs), "the GPU image installs no Python 3.11"


def test_gpu_installs_cuda_torch_then_kilosort_4() -> None:
    df = dockerfile(GPU)
    major, minor = _cuda_version(df.external_base(df.final))
    torch_at = kilosort_at = None
    for stage in df.stages:
        for index, tokens in pip_installs(stage):
            reqs = [Requirement(r) for r in requirements(tokens) if not r.startswith(".")]
            names = {r.name for r in reqs}
            if "torch" in names:
                url = tokens[tokens.index("--index-url") + 1] if "--index-url" in tokens else ""
                m = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", url)
                assert m, f"torch must come from PyTorch's CUDA index, not {url or 'PyPI'}"
                assert m.group(1) == f"{major}{minor}", (
                    f"torch from {url} does not match the base image's CUDA {major}.{minor}")
                torch_at = (stage.name, index)
            for req in reqs:
                if req.name == "kilosort":
                    assert not req.extras, f"kilosort{sorted(req.extras)}: the extras pull in Qt"
                    spec = req.specifier
                    assert spec.contains("4.1.7") and spec.contains("4.99")
                    assert not spec.contains("3.99") and not spec.contains("5.0")
                    kilosort_at = (stage.name, index)
    assert torch_at, "the GPU image does not install torch"
    assert kilosort_at, "the GPU image does not install kilosort"
    # torch first, in the same stage: else pip takes PyPI's torch for kilosort's torch>=2.1.
    assert torch_at[0] == kilosort_at[0] and torch_at[1] < kilosort_at[1]


# --- .dockerignore --------------------------------------------------------------------------------


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = dockerignore_patterns()
    for path in (".git", ".git/HEAD", "tests", "tests/helm/test_images.py", "build/lib",
                 "neuropool.egg-info", "benchmarks", "helm/neuropool/values.yaml",
                 "neuropool-demo/x", "neuropool/__pycache__/cli.cpython-311.pyc", "a/b.zarr",
                 "certs/worker.key"):
        assert is_excluded(path, patterns), f".dockerignore lets {path} into the context"
    for path in ("pyproject.toml", "README.md", "neuropool/cli.py", "configs/prefect.yaml"):
        assert not is_excluded(path, patterns), f".dockerignore excludes {path}"


# --- building and running the CPU image (needs a Docker engine) -----------------------------------


def _docker_engine() -> str | None:
    """Why no Docker engine can build here, or None when one answers.

    Returns
    -------
    str or None
        A skip reason, or None.
    """
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "no Docker engine: `docker info` did not answer in 30 s"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"no Docker engine: `docker info` failed: {last}"
    return None


@pytest.fixture(scope="module")
def cpu_image() -> str:
    """The CPU image built from this checkout (skips without a Docker engine).

    Returns
    -------
    str
        The image's tag.
    """
    if reason := _docker_engine():
        pytest.skip(reason)
    tag = f"neuropool-image-test:{pyproject()['project']['version']}"
    build = subprocess.run(["docker", "build", "-f", str(ROOT / CPU), "-t", tag, str(ROOT)],
                           capture_output=True, text=True, timeout=3000)
    assert build.returncode == 0, f"docker build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    return tag


def _run(image: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the image as the chart's pods do: read-only root, a tmpfs on /tmp.

    Parameters
    ----------
    image : str
        The image.
    *command : str
        The command and its arguments.

    Returns
    -------
    subprocess.CompletedProcess
    """
    return subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", image, *command],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cpu_image_runs_read_only(cpu_image: str) -> None:
    version = _run(cpu_image, "neuropool", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"neuropool {pyproject()['project']['version']}"
    uid = _run(cpu_image, "id", "-u")
    assert uid.stdout.strip() == "10001"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cpu_image_imports_its_extras_read_only(cpu_image: str) -> None:
    # numba compiles (and caches under /tmp) at import of the codecs; the extras' modules load.
    imports = _run(cpu_image, "python", "-c",
                   "import neuropool.io.codecs, neuropool.graphs.flows, s3fs, prefect_kubernetes")
    assert imports.returncode == 0, imports.stderr[-4000:]
    configs = _run(cpu_image, "ls", "configs/cluster", "configs/prefect.yaml")
    assert configs.returncode == 0, configs.stderr
