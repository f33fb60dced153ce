"""Pipeline configuration: every task's parameters, from YAML, validated with field names.

The defaults live in the task parameter models (code), and ``configs/pipeline/default.yaml``
spells them all out (a test keeps the two identical). A config file may give any subset: what it
leaves out keeps its default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neuropool.errors import ConfigError
from neuropool.tasks.decompress import DecompressParams
from neuropool.tasks.export import ExportParams
from neuropool.tasks.lfp import LfpParams
from neuropool.tasks.localize import LocalizeParams
from neuropool.tasks.nwb import NwbParams
from neuropool.tasks.preprocess import PreprocessTaskParams
from neuropool.tasks.qc import QCParams
from neuropool.tasks.rawqc import RawQCParams
from neuropool.tasks.sort import SortParams


class PipelineConfig(BaseModel):
    """The standard pipeline's parameters, one section per task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field("processed", pattern=r"^[A-Za-z0-9-]+$", description="derived asset label")
    retries: int = Field(2, ge=0, le=10, description="times a failed block is run again")
    decompress: DecompressParams = DecompressParams()
    preprocess: PreprocessTaskParams = PreprocessTaskParams()
    sort: SortParams = SortParams()
    qc: QCParams = QCParams()
    localize: LocalizeParams = LocalizeParams()
    export: ExportParams = ExportParams()
    nwb: NwbParams = NwbParams()
    lfp: LfpParams = LfpParams()
    raw_qc: RawQCParams = RawQCParams()

    def task_params(self, task: str) -> dict[str, Any]:
        """The parameters of ``task`` as plain data (only those that differ from defaults)."""
        section = getattr(self, task, None)
        return section.model_dump(mode="json", exclude_defaults=True) if section is not None else {}


def load_config(source: str | Path | dict[str, Any] | None = None) -> PipelineConfig:
    """Read a pipeline config from a YAML file or a dict; None gives the defaults.

    Raises
    ------
    ConfigError
        Naming the file and every invalid field (``sort.sorter: ...``).
    """
    if source is None:
        return PipelineConfig()
    where = "the config"
    if isinstance(source, dict):
        data = source
    else:
        where = str(source)
        try:
            data = yaml.safe_load(Path(source).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{where}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of task sections, found {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            + (f" (got {err['input']!r})" if not isinstance(err.get("input"), dict) else "")
            for err in e.errors()
        )
        raise ConfigError(f"{where}: invalid pipeline configuration:\n{problems}") from None


def config_dirs() -> list[Path]:
    """Where named pipeline configs are looked up: ``$NEUROPOOL_CONFIG_DIR``, then
    ``configs/pipeline/`` under the working directory."""
    dirs = [Path(d) for d in os.environ.get("NEUROPOOL_CONFIG_DIR", "").split(os.pathsep) if d]
    return [*dirs, Path.cwd() / "configs" / "pipeline"]


def config_by_name(name_or_path: str | None) -> PipelineConfig:
    """A pipeline config by name (``default``, ``aind`` -> ``<dir>/aind.yaml``) or by path.

    ``None`` and ``"default"`` give the built-in defaults.

    Raises
    ------
    ConfigError
        When there is no such config (listing those there are), or it is invalid.
    """
    if name_or_path in (None, "", "default"):
        return PipelineConfig()
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_config(path)
    for folder in config_dirs():
        if (folder / f"{name_or_path}.yaml").is_file():
            return load_config(folder / f"{name_or_path}.yaml")
    known = sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.yaml")} | {"default"})
    raise ConfigError(
        f"config {name_or_path!r}: no such file, and no {name_or_path}.yaml in "
        f"{', '.join(map(str, config_dirs()))}; named configs: {', '.join(known)}"
    )
