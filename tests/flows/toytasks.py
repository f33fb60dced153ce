"""A toy task that holds a (pretend) GPU for a while and records when, for the GPU-limit test."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from neuropool.io import urls
from neuropool.tasks import register
from neuropool.tasks.base import Params, Resources, Task, TaskContext


class GpuSleepParams(Params):
    seconds: float = Field(1.0, ge=0)
    trace_dir: str = ""


class ToyGpuSleep(Task):
    name = "toy_gpu_sleep"
    version = "1"
    Params = GpuSleepParams
    inputs = ("toy.value",)
    outputs = ("toy.gpu_sleep",)
    default_resources = Resources(gpus=1)

    def run_block(self, ctx: TaskContext, block: Any) -> Any:
        start = time.time()
        time.sleep(self.params.seconds)
        span = {"probe": ctx.probe, "start": start, "end": time.time()}
        Path(self.params.trace_dir, f"{ctx.probe}.json").write_text(json.dumps(span))
        urls.write_json(urls.join(ctx.outputs["toy.gpu_sleep"], "done.json"), span)
        return span


register(ToyGpuSleep.name, ToyGpuSleep)
