"""The Ray pool: connect to a Ray cluster, or start a Ray instance in this process.

Ray is an optional dependency (``pip install "neuropool[ray]"``) and is imported only here, when
a :class:`RayPool` is made. Each submitted call becomes a Ray task asking for one CPU, the GPUs
it requests and any custom resources; a call that raises is retried like on Dask.

Token authentication (Ray 2.60): a local ``RayPool()`` enables it, with the token of
``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` or else ``~/.ray/auth_token`` (created if missing).
To connect to a cluster that uses it, set ``RAY_AUTH_MODE=token`` and give the cluster's token the
same way: Ray sends no token to an explicit address unless told to.
"""

from __future__ import annotations

import inspect
import os
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from neuropool.cluster.base import Pool
from neuropool.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from types import ModuleType

#: Ray resources that describe a node rather than something a task may ask for.
_INTERNAL_RESOURCES = ("memory", "object_store_memory")
_INTERNAL_PREFIXES = ("node:", "accelerator_type:")


def import_ray() -> ModuleType:
    """Import Ray, or say how to install it.

    Raises
    ------
    MissingDependencyError
        When the ``ray`` package is not installed.
    """
    try:
        import ray
    except ImportError as e:
        raise MissingDependencyError(
            'the Ray pool needs the "ray" package, which is not installed: '
            'pip install "neuropool[ray]"'
        ) from e
    return ray


def _original_error(ray: ModuleType, exc: BaseException) -> BaseException:
    """The exception a task raised, rather than Ray's ``RayTaskError`` wrapper around it.

    The remote traceback, which the original exception no longer carries, is added as a note.
    Ray's own errors (a crashed worker, a cancelled task) come back unchanged.
    """
    if not isinstance(exc, ray.exceptions.RayTaskError):
        return exc
    cause = exc.__dict__.get("cause")  # not getattr: the wrapper forwards attributes to the cause
    if not isinstance(cause, BaseException):
        return exc
    cause.add_note(f"raised in a Ray task:\n{exc}")  # str(exc) is the remote traceback
    return cause


class RayFuture:
    """A Ray ``ObjectRef`` behind the small future interface the runner uses.

    Parameters
    ----------
    ray : module
        The imported ``ray`` package.
    ref : ray.ObjectRef
        The result of the remote call.
    """

    def __init__(self, ray: ModuleType, ref: Any) -> None:
        self._ray = ray
        self.ref = ref
        self._outcome: tuple[bool, Any] | None = None  # (ok, value or exception), once known

    def _settle(self, timeout: float | None) -> tuple[bool, Any]:
        if self._outcome is None:
            try:
                self._outcome = (True, self._ray.get(self.ref, timeout=timeout))
            except self._ray.exceptions.GetTimeoutError:
                raise TimeoutError(f"the Ray task was not done after {timeout} s") from None
            except self._ray.exceptions.RayError as e:
                self._outcome = (False, _original_error(self._ray, e))
        return self._outcome

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the call and return its value; raise what the call raised."""
        ok, value = self._settle(timeout)
        if not ok:
            raise value
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the call; return what it raised (its original type), or None."""
        ok, value = self._settle(timeout)
        return None if ok else value

    def done(self) -> bool:
        """True when the call has finished (either way)."""
        if self._outcome is not None:
            return True
        ready, _ = self._ray.wait([self.ref], num_returns=1, timeout=0, fetch_local=False)
        return bool(ready)

    def cancel(self) -> bool:
        """Cancel the call if it has not finished; True if a cancellation was requested."""
        if self.done():
            return False
        self._ray.cancel(self.ref)
        return True

    def __repr__(self) -> str:
        return f"<RayFuture {self.ref.hex()}>"


class RayPool(Pool):
    """A pool of Ray workers.

    With ``address=None`` a Ray instance is started in this process (``ray.init``) and shut down
    with the pool; with an address, the pool connects as a driver and :meth:`close` only
    disconnects: the cluster stays up. If Ray is already initialised in this process, the pool
    uses that connection and leaves it open.

    Parameters
    ----------
    address : str, optional
        ``"auto"`` (a cluster started on this machine with ``ray start``), ``"HOST:6379"`` (the
        head's GCS address) or ``"ray://HOST:10001"`` (Ray Client).
    num_cpus, num_gpus : int, optional
        For a local instance only: what to advertise. By default Ray counts the machine's CPUs
        and GPUs.
    runtime_env : dict, optional
        Ray runtime environment of the job (``{"env_vars": {...}, "working_dir": ...}``).

    Raises
    ------
    MissingDependencyError
        When Ray is not installed.
    ConfigError
        For ``num_cpus`` / ``num_gpus`` with an address, or a token-authentication mismatch.
    """

    kind = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        ray = self._ray = import_ray()
        local_only = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        given = ", ".join(k for k, v in local_only.items() if v is not None)
        if address is not None and given:
            raise ConfigError(
                f"{given} only apply to a Ray instance that RayPool starts itself (address=None); "
                f"the cluster at {address!r} advertises its own resources"
            )
        self._remote: weakref.WeakKeyDictionary[Callable[..., Any], Any] = weakref.WeakKeyDictionary()
        self._connected = False  # whether this pool called ray.init (so close() must shut down)
        self._requested = address
        if ray.is_initialized():
            if given or runtime_env is not None:
                raise ConfigError(
                    f"Ray is already initialised in this process, so {given or 'runtime_env'} "
                    "cannot apply; call ray.shutdown() first or make RayPool() without them"
                )
            self._address = address or "ray (already initialised)"
            return
        _refresh_auth_settings(ray)
        try:
            context = ray.init(
                address=address,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                runtime_env=runtime_env,
            )
        except Exception as e:
            if _is_auth_error(e):
                where = f"the Ray cluster at {address!r}" if address else "the Ray instance started here"
                raise ConfigError(
                    f"{where} refused this process's authentication token (RAY_AUTH_MODE here: "
                    f"{os.environ.get('RAY_AUTH_MODE', 'unset')!r}). Set RAY_AUTH_MODE=token and "
                    "give the cluster's token in RAY_AUTH_TOKEN (or a file named by "
                    "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token); `ray get-auth-token` on the head "
                    "node prints it"
                ) from e
            raise
        self._connected = True
        info = getattr(context, "address_info", None) or {}
        self._address = address if address not in (None, "auto") else info.get("gcs_address", "ray")
        self._dashboard = getattr(context, "dashboard_url", None)

    @property
    def address(self) -> str:
        return str(self._address)

    @property
    def owns_instance(self) -> bool:
        """True when this pool started the Ray instance it runs on (``address=None``)."""
        return self._connected and self._requested is None

    @property
    def dashboard_link(self) -> str | None:
        """URL of the Ray dashboard, when there is one."""
        url = getattr(self, "_dashboard", None)
        return f"http://{url}" if url and "://" not in url else url

    def _remote_function(self, fn: Callable[..., Any]) -> Any:
        """``ray.remote(fn)``, made once per function (Ray exports each one it is given)."""
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(fn)
        return remote

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        resources: dict[str, float] | None = None,
        retries: int = 0,
        key: str | None = None,
    ) -> RayFuture:
        custom = dict(resources or {})
        options: dict[str, Any] = {
            "num_cpus": custom.pop("CPU", 1),
            "num_gpus": custom.pop("GPU", 0),
            "max_retries": retries,
            "retry_exceptions": True,
        }
        if custom:
            options["resources"] = custom
        if key:
            options["name"] = key
        if inspect.isfunction(fn):
            ref = self._remote_function(fn).options(**options).remote(*args)
        else:  # Ray only makes remote tasks of plain functions: call builtins, partials through one
            ref = self._remote_function(_call).options(**options).remote(fn, *args)
        return RayFuture(self._ray, ref)

    def wait(self, futures: Iterable[Any], timeout: float | None = None) -> tuple[set, set]:
        by_ref = {f.ref: f for f in futures}
        if not by_ref:
            return set(), set()
        refs = list(by_ref)
        ready, rest = self._ray.wait(refs, num_returns=1, timeout=timeout, fetch_local=False)
        if ready and rest:  # hand back everything already finished, not just the first
            more, rest = self._ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=False)
            ready += more
        return {by_ref[r] for r in ready}, {by_ref[r] for r in rest}

    def worker_resources(self) -> list[dict[str, float]]:
        """One entry per alive Ray node: ``CPU`` and ``GPU`` (0 when absent) and custom ones."""
        out = []
        for node in self._ray.nodes():
            if not node.get("Alive", node.get("alive")):
                continue
            res = {"CPU": 0.0, "GPU": 0.0}
            for name, value in (node.get("Resources") or {}).items():
                if name in _INTERNAL_RESOURCES or name.startswith(_INTERNAL_PREFIXES):
                    continue
                res[name] = float(value)
            out.append(res)
        return out

    def close(self) -> None:
        """Shut down the Ray instance this pool started; from a cluster, only disconnect."""
        if self._connected and self._ray.is_initialized():
            self._ray.shutdown()
        self._connected = False


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)``: the Ray task behind callables that are not plain functions."""
    return fn(*args)


def _refresh_auth_settings(ray: ModuleType) -> None:
    """Make Ray see the authentication settings of the environment as they are now.

    Ray's core reads ``RAY_AUTH_MODE`` once, when ``ray`` is imported, and caches the token once
    loaded; set later (in a notebook, a test), the processes Ray starts enforce the token while
    this one sends none, and ``ray.init`` fails with ``InvalidAuthToken``. Ray refreshes its
    config the same way when it enables token authentication itself. Private API: if it moves,
    nothing is refreshed and Ray behaves as it does without neuropool.
    """
    try:
        from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, Config
        from ray._raylet import get_authentication_mode as current_mode
    except ImportError:
        return
    wanted = os.environ.get("RAY_AUTH_MODE")
    if wanted is not None and (wanted.lower() == "token") != (current_mode() == AuthenticationMode.TOKEN):
        Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _is_auth_error(exc: BaseException) -> bool:
    """Whether ``exc`` or one of its causes is Ray refusing an authentication token."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False

