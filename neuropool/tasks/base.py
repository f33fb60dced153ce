"""The task contract: a named, versioned step with validated parameters, declared datasets and
resources.

A task computes; it does not decide where its results live: the graph runner hands it a
:class:`TaskContext` with the URLs of its inputs and outputs. A task's work is split in three so
that one step can fan out over many workers without knowing anything about pools:

``setup(ctx)``
    runs on the client; prepares the outputs (creates empty stores) and returns the list of
    independent work blocks (by default a single ``None``).
``run_block(ctx, block)``
    runs on a worker, once per block, possibly in parallel; must be idempotent (a lost worker's
    block is simply run again) and write only its own part of the outputs.
``finish(ctx, results)``
    runs on the client with the blocks' return values; finalises outputs and returns a small
    JSON-able summary that goes into ``processing.json``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neuropool.errors import ConfigError

#: Mark a parameter that says *how* a task runs, not *what* it computes (cores, GPUs):
#: ``Field(..., json_schema_extra=RUN_ONLY)``. Changing it does not redo committed work.
RUN_ONLY: dict[str, Any] = {"run_only": True}


class Params(BaseModel):
    """Base of every task's parameter model: unknown fields are errors, values are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The parameters that decide the outputs (all but the ``RUN_ONLY`` ones), as JSON."""
        run_only = {name for name, f in type(self).model_fields.items()
                    if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("run_only")}
        return self.model_dump(mode="json", exclude=run_only)


class Resources(BaseModel):
    """What one block of a task needs from the worker that runs it.

    Parameters
    ----------
    cpus : float
        Cores the block keeps busy.
    memory_gb : float or None
        Peak memory of the block; None when small (bounded by the chunk size).
    gpus : int
        CUDA GPUs the block needs; a block with ``gpus > 0`` only lands on a worker that
        advertises a ``GPU`` resource.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float = Field(1.0, gt=0)
    memory_gb: float | None = Field(None, gt=0)
    gpus: int = Field(0, ge=0)

    def as_dask(self) -> dict[str, float]:
        """Resource restrictions for ``Client.submit(resources=...)``: only the scarce ones.

        CPUs and memory are left to the scheduler's own accounting (restricting them would make
        every worker advertise them); GPUs are a hard constraint.
        """
        return {"GPU": float(self.gpus)} if self.gpus else {}


@dataclass
class TaskContext:
    """Everything a task is told about one run of one node.

    Attributes
    ----------
    node : str
        Node id, e.g. ``"preprocess[probe00]"``.
    probe : str
        The probe this node works on.
    inputs, outputs : dict
        Dataset name -> URL.
    storage_options : dict
        fsspec options for every URL (credentials stay out of provenance).
    info : dict
        Small facts the runner passes along (session metadata, the sorter's scratch folder...).
    """

    node: str
    probe: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    storage_options: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """Base class of every processing step. See the module docstring for the life cycle."""

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    inputs: ClassVar[tuple[str, ...]] = ()
    #: Inputs a node reads when its graph has them (``ctx.inputs`` then holds them too).
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    default_resources: ClassVar[Resources] = Resources()
    #: Hold BLAS to ``resources().cpus`` threads while a block runs (False: the task manages
    #: its own parallelism, as the sorter and the QC do with ``n_jobs``).
    limit_blas: ClassVar[bool] = True

    def __init__(self, params: Params | dict[str, Any] | None = None) -> None:
        self.params = self.validate_params(params)

    @classmethod
    def validate_params(cls, params: Params | dict[str, Any] | None) -> Params:
        """Turn a dict into the task's parameter model; errors name the task and the field."""
        if isinstance(params, cls.Params):
            return params
        try:
            return cls.Params.model_validate(dict(params or {}))
        except ValidationError as e:
            problems = "; ".join(
                f"{cls.name}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                + (f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else "")
                for err in e.errors()
            )
            raise ConfigError(f"invalid parameters for task {cls.name!r}: {problems}") from None

    def resources(self) -> Resources:
        """What each block of this task needs (may depend on the parameters)."""
        return self.default_resources

    def setup(self, ctx: TaskContext) -> list[Any]:
        """Prepare outputs on the client and return the work blocks; one block by default."""
        return [None]

    @abstractmethod
    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        """Do the work of one block on a worker; return something small and picklable."""

    def finish(self, ctx: TaskContext, results: list[Any]) -> dict[str, Any]:
        """Finalise on the client; return a JSON-able summary for ``processing.json``."""
        if len(results) == 1 and isinstance(results[0], dict):
            return results[0]
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"
